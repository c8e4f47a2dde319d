//! Headers-exchange matching (`x-match` = all / any / all-with-x / any-with-x).

use amq_protocol_types::FieldTable;

/// The `x-match` mode of a headers binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchMode {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

/// A parsed headers binding: the mode and the (non-`x-`, unless with-x) pairs to match.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadersMatch {
    _mode: MatchMode,
    _args: FieldTable,
}
