//! Headers-exchange matching (`x-match` = all / any / all-with-x / any-with-x).
//!
//! Semantics follow RabbitMQ's `rabbit_exchange_type_headers`:
//!
//! * `x-match` absent means `all`. Present, it must be a string (RabbitMQ requires a
//!   long string; a short string is accepted too since it is still text) equal to `all`,
//!   `any`, `all-with-x` or `any-with-x`; anything else is refused at bind time.
//! * The `x-match` pair itself never takes part in matching. Other binding arguments
//!   whose key starts with `x-` are ignored by `all`/`any` and matched by the `-with-x`
//!   variants.
//! * A binding argument of type void matches when the header is present, whatever its
//!   value ("no value" means presence).
//! * `all` with no pairs left matches every message (even one without headers); `any`
//!   with no pairs matches none — these fall out of RabbitMQ's fold starting from
//!   `AllMatch = true, AnyMatch = false`.
//! * Values are compared the way Erlang's `==` compares RabbitMQ's decoded field values,
//!   which drops the AMQP type tag: see [`values_equal`].

use amq_protocol_types::{AMQPValue, FieldTable, ShortString};

/// The `x-match` mode of a headers binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchMode {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

impl MatchMode {
    /// Whether `x-`-prefixed binding arguments take part in matching.
    fn with_x(self) -> bool {
        matches!(self, Self::AllWithX | Self::AnyWithX)
    }
}

/// A parsed headers binding: the mode and the (non-`x-`, unless with-x) pairs to match.
#[derive(Clone, Debug, PartialEq)]
pub struct HeadersMatch {
    mode: MatchMode,
    /// Pairs to match, already filtered by mode; sorted by key (from the BTreeMap).
    pairs: Vec<(ShortString, AMQPValue)>,
}

impl HeadersMatch {
    /// Parses binding arguments. Errors (with a message for the channel close) when
    /// `x-match` is not a string or not one of the four modes.
    pub fn parse(args: &FieldTable) -> Result<Self, String> {
        let mode = match args.inner().get("x-match") {
            None => MatchMode::All,
            Some(AMQPValue::LongString(s)) => Self::parse_mode(s.as_bytes())?,
            Some(AMQPValue::ShortString(s)) => Self::parse_mode(s.as_str().as_bytes())?,
            Some(other) => return Err(format!("Invalid x-match field type {:?}; expected longstr", other.get_type())),
        };
        let with_x = mode.with_x();
        let pairs = args
            .into_iter()
            .filter(|(k, _)| {
                let k = k.as_str();
                k != "x-match" && (with_x || !k.starts_with("x-"))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(Self { mode, pairs })
    }

    fn parse_mode(s: &[u8]) -> Result<MatchMode, String> {
        match s {
            b"all" => Ok(MatchMode::All),
            b"any" => Ok(MatchMode::Any),
            b"all-with-x" => Ok(MatchMode::AllWithX),
            b"any-with-x" => Ok(MatchMode::AnyWithX),
            other => Err(format!(
                // RabbitMQ's wording, with the value shown as an Erlang binary.
                "Invalid x-match field value <<{:?}>>; expected all, any, all-with-x, or any-with-x",
                String::from_utf8_lossy(other)
            )),
        }
    }

    /// The binding's mode.
    pub fn mode(&self) -> MatchMode {
        self.mode
    }

    /// True if a message with these headers (None: no headers at all) matches.
    pub fn matches(&self, headers: Option<&FieldTable>) -> bool {
        let pair_matches =
            |(key, want): &(ShortString, AMQPValue)| match headers.and_then(|h| h.inner().get(key.as_str())) {
                None => false,
                Some(_) if matches!(want, AMQPValue::Void) => true,
                Some(got) => values_equal(want, got),
            };
        match self.mode {
            MatchMode::All | MatchMode::AllWithX => self.pairs.iter().all(pair_matches),
            MatchMode::Any | MatchMode::AnyWithX => self.pairs.iter().any(pair_matches),
        }
    }
}

/// A field value as RabbitMQ's Erlang term sees it once the type tag is dropped.
enum Loose<'a> {
    Int(i128),
    Float(f64),
    Bytes(&'a [u8]),
    Other(&'a AMQPValue),
}

fn loose(v: &AMQPValue) -> Loose<'_> {
    use AMQPValue as V;
    match v {
        V::ShortShortInt(n) => Loose::Int((*n).into()),
        V::ShortShortUInt(n) => Loose::Int((*n).into()),
        V::ShortInt(n) => Loose::Int((*n).into()),
        V::ShortUInt(n) => Loose::Int((*n).into()),
        V::LongInt(n) => Loose::Int((*n).into()),
        V::LongUInt(n) => Loose::Int((*n).into()),
        V::LongLongInt(n) => Loose::Int((*n).into()),
        V::Timestamp(n) => Loose::Int((*n).into()),
        V::Float(f) => Loose::Float((*f).into()),
        V::Double(f) => Loose::Float(*f),
        V::LongString(s) => Loose::Bytes(s.as_bytes()),
        V::ShortString(s) => Loose::Bytes(s.as_str().as_bytes()),
        V::ByteArray(b) => Loose::Bytes(b.as_slice()),
        other => Loose::Other(other),
    }
}

/// Equality of a binding value and a header value, matching RabbitMQ.
///
/// RabbitMQ compares the decoded values with Erlang's `==` (`PV == DV`), ignoring the
/// type tags, so:
/// * all integer types (and timestamps, which decode to integers) are equal when their
///   numeric values are: `1u8 == 1i64`;
/// * integers and floats compare numerically (`==` is arithmetic equality):
///   `1i32 == 1.0f64`; `f32` widens to `f64` as RabbitMQ decodes it to a double;
/// * long strings, short strings and byte arrays all decode to binaries, so equal bytes
///   are equal whatever the type;
/// * booleans, decimals (scale and value both), nested arrays and tables compare
///   structurally. Inside nested arrays/tables RabbitMQ keeps the type tags, so there
///   the comparison is the exact one (`PartialEq`).
pub fn values_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    match (loose(a), loose(b)) {
        (Loose::Int(x), Loose::Int(y)) => x == y,
        (Loose::Float(x), Loose::Float(y)) => x == y,
        (Loose::Int(i), Loose::Float(f)) | (Loose::Float(f), Loose::Int(i)) => {
            // Exact: f must be integral and within range. `as` saturates, and an i128
            // here comes from at most 64 bits, so a saturated value can never collide.
            f.is_finite() && f.fract() == 0.0 && (f as i128) == i
        }
        (Loose::Bytes(x), Loose::Bytes(y)) => x == y,
        (Loose::Other(x), Loose::Other(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol_types::{DecimalValue, FieldArray};

    fn table(pairs: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert((*k).into(), v.clone());
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(v.into())
    }

    fn m(pairs: &[(&str, AMQPValue)]) -> HeadersMatch {
        HeadersMatch::parse(&table(pairs)).expect("valid")
    }

    #[test]
    fn parse_modes() {
        assert_eq!(m(&[]).mode(), MatchMode::All);
        assert_eq!(m(&[("x-match", s("all"))]).mode(), MatchMode::All);
        assert_eq!(m(&[("x-match", s("any"))]).mode(), MatchMode::Any);
        assert_eq!(m(&[("x-match", s("all-with-x"))]).mode(), MatchMode::AllWithX);
        assert_eq!(m(&[("x-match", s("any-with-x"))]).mode(), MatchMode::AnyWithX);
        let short = AMQPValue::ShortString("any".into());
        assert_eq!(m(&[("x-match", short)]).mode(), MatchMode::Any);
        assert!(HeadersMatch::parse(&table(&[("x-match", s("ALL"))])).is_err());
        assert!(HeadersMatch::parse(&table(&[("x-match", s("some"))])).is_err());
        let int = AMQPValue::LongInt(1);
        assert!(HeadersMatch::parse(&table(&[("x-match", int)])).is_err());
        assert!(HeadersMatch::parse(&table(&[("x-match", AMQPValue::Void)])).is_err());
    }

    #[test]
    fn all_and_any() {
        let all = m(&[("a", s("1")), ("b", s("2"))]);
        let any = m(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]);
        let both = table(&[("a", s("1")), ("b", s("2")), ("c", s("3"))]);
        let one = table(&[("a", s("1")), ("b", s("9"))]);
        let none = table(&[("c", s("1"))]);
        assert!(all.matches(Some(&both)));
        assert!(!all.matches(Some(&one)));
        assert!(!all.matches(Some(&none)));
        assert!(!all.matches(None));
        assert!(any.matches(Some(&both)));
        assert!(any.matches(Some(&one)));
        assert!(!any.matches(Some(&none)));
        assert!(!any.matches(None));
    }

    #[test]
    fn empty_pattern() {
        let all = m(&[]);
        let any = m(&[("x-match", s("any"))]);
        assert!(all.matches(None));
        assert!(all.matches(Some(&table(&[("a", s("1"))]))));
        assert!(!any.matches(None));
        assert!(!any.matches(Some(&table(&[("a", s("1"))]))));
        // Only x- arguments: ignored by plain modes, so this is an empty pattern too.
        let all_x = m(&[("x-foo", s("1"))]);
        assert!(all_x.matches(None));
    }

    #[test]
    fn x_arguments() {
        let h = table(&[("x-foo", s("1"))]);
        let plain_any = m(&[("x-match", s("any")), ("x-foo", s("1"))]);
        assert!(!plain_any.matches(Some(&h)));
        let any_x = m(&[("x-match", s("any-with-x")), ("x-foo", s("1"))]);
        assert!(any_x.matches(Some(&h)));
        let all_x = m(&[("x-match", s("all-with-x")), ("x-foo", s("1")), ("a", s("2"))]);
        assert!(!all_x.matches(Some(&h)));
        assert!(all_x.matches(Some(&table(&[("x-foo", s("1")), ("a", s("2"))]))));
        // x-match itself is never matched, even in with-x modes.
        let all_x2 = m(&[("x-match", s("all-with-x"))]);
        assert!(all_x2.matches(None));
    }

    #[test]
    fn void_means_present() {
        let all = m(&[("a", AMQPValue::Void)]);
        assert!(all.matches(Some(&table(&[("a", s("anything"))]))));
        assert!(all.matches(Some(&table(&[("a", AMQPValue::Void)]))));
        assert!(!all.matches(Some(&table(&[("b", s("x"))]))));
        // A void header value does not equal a non-void binding value.
        let want = m(&[("a", s("x"))]);
        assert!(!want.matches(Some(&table(&[("a", AMQPValue::Void)]))));
    }

    #[test]
    fn loose_value_equality() {
        use AMQPValue as V;
        assert!(values_equal(&V::ShortShortUInt(1), &V::LongLongInt(1)));
        assert!(values_equal(&V::LongUInt(u32::MAX), &V::LongLongInt(u32::MAX.into())));
        assert!(!values_equal(&V::ShortInt(-1), &V::ShortUInt(u16::MAX)));
        assert!(values_equal(&V::LongInt(3), &V::Double(3.0)));
        assert!(!values_equal(&V::LongInt(3), &V::Double(3.5)));
        assert!(values_equal(&V::Float(0.5), &V::Double(0.5)));
        assert!(values_equal(&V::Timestamp(7), &V::LongInt(7)));
        assert!(values_equal(&s("ab"), &V::ByteArray(b"ab".to_vec().into())));
        assert!(values_equal(&s("ab"), &V::ShortString("ab".into())));
        assert!(!values_equal(&s("1"), &V::LongInt(1)));
        assert!(!values_equal(&V::Boolean(true), &V::LongInt(1)));
        assert!(values_equal(&V::Boolean(false), &V::Boolean(false)));
        let d = |scale, value| V::DecimalValue(DecimalValue { scale, value });
        assert!(values_equal(&d(1, 10), &d(1, 10)));
        assert!(!values_equal(&d(1, 10), &d(0, 1)));
        let arr = |v: Vec<AMQPValue>| V::FieldArray(FieldArray::from(v));
        assert!(values_equal(&arr(vec![V::LongInt(1)]), &arr(vec![V::LongInt(1)])));
        assert!(!values_equal(&arr(vec![V::LongInt(1)]), &arr(vec![V::ShortInt(1)])));
        assert!(!values_equal(&V::Double(f64::NAN), &V::Double(f64::NAN)));
        assert!(!values_equal(&V::Double(f64::INFINITY), &V::LongLongInt(i64::MAX)));
    }

    #[test]
    fn numeric_header_match() {
        let b = m(&[("n", AMQPValue::LongInt(5))]);
        assert!(b.matches(Some(&table(&[("n", AMQPValue::ShortShortUInt(5))]))));
        assert!(b.matches(Some(&table(&[("n", AMQPValue::Double(5.0))]))));
        assert!(!b.matches(Some(&table(&[("n", s("5"))]))));
    }
}
