//! `declare KIND`: PUT (POST for bindings) of the object with RabbitMQ's body shapes.

use serde_json::{json, Map, Value};

use super::Context;
use crate::args::{BindingArgs, Declare, DeclareExchange, DeclareQueue, DeclareUser, DeclareVhost};
use crate::error::CtlError;
use crate::output;
use crate::path::api;

pub fn run(ctx: &Context, what: &Declare) -> Result<(), CtlError> {
    let vhost = ctx.vhost;
    let message = match what {
        Declare::Queue(q) => {
            ctx.client.put(&api(&["queues", vhost, &q.name]), &queue_body(q))?;
            format!("declared queue '{}' in vhost '{vhost}'", q.name)
        }
        Declare::Exchange(x) => {
            ctx.client.put(&api(&["exchanges", vhost, &x.name]), &exchange_body(x))?;
            format!("declared exchange '{}' in vhost '{vhost}'", x.name)
        }
        Declare::Binding(b) => {
            let path = binding_path(vhost, b);
            let body = json!({"routing_key": b.routing_key, "arguments": arguments(&b.arguments)});
            ctx.client.post(&path, body.to_string())?;
            format!(
                "bound {} '{}' to exchange '{}' with routing key '{}' in vhost '{vhost}'",
                b.destination_type.noun(),
                b.destination,
                b.source,
                b.routing_key
            )
        }
        Declare::Vhost(v) => {
            ctx.client.put(&api(&["vhosts", &v.name]), &vhost_body(v))?;
            format!("declared vhost '{}'", v.name)
        }
        Declare::User(u) => {
            ctx.client.put(&api(&["users", &u.name]), &user_body(u))?;
            format!("declared user '{}'", u.name)
        }
        Declare::Permissions(p) => {
            let body = json!({"configure": p.configure, "write": p.write, "read": p.read});
            ctx.client.put(&api(&["permissions", vhost, &p.user]), &body)?;
            format!("granted user '{}' permissions in vhost '{vhost}'", p.user)
        }
    };
    output::done(ctx.format, &message)
}

/// `/api/bindings/{vhost}/e/{source}/q|e/{destination}`.
pub fn binding_path(vhost: &str, b: &BindingArgs) -> String {
    api(&["bindings", vhost, "e", &b.source, b.destination_type.letter(), &b.destination])
}

/// An `--arguments` object, or `{}`.
pub fn arguments(given: &Option<Value>) -> Value {
    given.clone().unwrap_or_else(|| json!({}))
}

fn queue_body(q: &DeclareQueue) -> Value {
    let mut arguments = arguments(&q.arguments);
    if let (Some(queue_type), Value::Object(map)) = (&q.queue_type, &mut arguments) {
        map.insert("x-queue-type".to_string(), json!(queue_type));
    }
    json!({"durable": q.durable, "auto_delete": q.auto_delete, "arguments": arguments})
}

fn exchange_body(x: &DeclareExchange) -> Value {
    json!({
        "type": x.exchange_type,
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": arguments(&x.arguments),
    })
}

/// Only the fields given: a PUT on an existing vhost changes what it names.
fn vhost_body(v: &DeclareVhost) -> Value {
    let mut body = Map::new();
    for (key, value) in
        [("description", &v.description), ("tags", &v.tags), ("default_queue_type", &v.default_queue_type)]
    {
        if let Some(value) = value {
            body.insert(key.to_string(), json!(value));
        }
    }
    Value::Object(body)
}

fn user_body(u: &DeclareUser) -> Value {
    let mut body = Map::new();
    body.insert("tags".to_string(), json!(u.tags));
    if let Some(password) = &u.password {
        body.insert("password".to_string(), json!(password));
    }
    if let Some(hash) = &u.password_hash {
        body.insert("password_hash".to_string(), json!(hash));
    }
    if let Some(algorithm) = &u.hashing_algorithm {
        body.insert("hashing_algorithm".to_string(), json!(algorithm));
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_type_goes_into_the_arguments() {
        let q = DeclareQueue {
            name: "q".into(),
            queue_type: Some("quorum".into()),
            durable: true,
            auto_delete: false,
            arguments: Some(json!({"x-max-length": 5})),
        };
        assert_eq!(
            queue_body(&q),
            json!({"durable": true, "auto_delete": false, "arguments": {"x-max-length": 5, "x-queue-type": "quorum"}})
        );
    }
}
