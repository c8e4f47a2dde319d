//! What a user may do to a vhost's resources through the API: RabbitMQ checks the
//! same configure/write/read permissions an AMQP client needs (an administrator tag
//! does not replace them). A user without permissions in the vhost gets 401 `User
//! not authorised to access virtual host`; one whose expression does not match gets
//! 401 `Access refused.`, RabbitMQ's answers.

pub use crate::auth::permissions::Access;
use std::sync::Arc;

use crate::auth::permissions::Permission;

use super::{Call, Context, Reply};

/// The user's permission in a vhost, or RabbitMQ's 401 when it has none.
pub fn permission_in(ctx: &Context, call: &Call, vhost: &str) -> Result<Arc<Permission>, Reply> {
    ctx.broker
        .users
        .grants
        .permission(&call.login.name, vhost)
        .ok_or_else(|| Reply::error(401, "not_authorised", "User not authorised to access virtual host"))
}

/// 401 `Access refused.` unless the user has `access` on `name` in `vhost`.
pub fn require(ctx: &Context, call: &Call, vhost: &str, access: Access, name: &str) -> Result<(), Reply> {
    if permission_in(ctx, call, vhost)?.allows(access, name) {
        Ok(())
    } else {
        Err(refused())
    }
}

pub fn refused() -> Reply {
    Reply::error(401, "not_authorised", "Access refused.")
}

/// Whether the user has `access` on `name` (false without permissions in the vhost).
pub fn allows(ctx: &Context, call: &Call, vhost: &str, access: Access, name: &str) -> bool {
    permission_in(ctx, call, vhost).is_ok_and(|p| p.allows(access, name))
}
