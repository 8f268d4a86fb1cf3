//! Row-level filters: which notifications of a collection a session wants,
//! by the top-level fields of their `data`.
//!
//! A filter is an AND of conditions, each `field = value` or
//! `field in [values]`. Both sides are prepared once: a filter when the
//! client subscribes, a notification's fields ([`Fields`]) the first time a
//! filtered session reads its entry in the history (once for all of them;
//! never on the caller's `notify` path, and never when nobody filters).
//! Matching is then a few comparisons per session, with no JSON read or
//! written per client.
//!
//! Moves and deletes: an update whose `data` carries a `before` object
//! (the old values of the fields that changed) matches a filter that either
//! the new row or the old row passes, so a post moved from forum 3 to
//! forum 5 reaches the subscribers of both. A delete's `data` carries the
//! removed row's fields and matches like any other.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The longest field name a filter may use, in bytes.
pub(crate) const MAX_FIELD_LEN: usize = 64;
/// The most conditions (fields) one filter may have.
pub(crate) const MAX_CONDITIONS: usize = 8;
/// The most values one `in` condition may list.
pub(crate) const MAX_VALUES: usize = 64;
/// The longest string value a condition may compare with, in bytes.
pub(crate) const MAX_STRING_LEN: usize = 256;
/// The most filters (alternatives) one collection's subscription may have.
pub(crate) const MAX_FILTERS: usize = 16;
/// The most values all the filters of one session may hold together: this
/// bounds both the memory a client can make the server keep and the work
/// each notification costs its session.
pub(crate) const MAX_SESSION_VALUES: usize = 1024;

/// The field of `data` that holds an update's old values.
pub(crate) const BEFORE: &str = "before";

/// A JSON scalar, in a form compared without parsing: numbers that are
/// integers compare as integers whatever their spelling (`3`, `3.0`).
/// Equal scalars hash alike, so the fan-out's index can look one up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    /// The bits of a non-integer number.
    Float(u64),
    Str(Box<str>),
}

impl Scalar {
    /// The scalar `value` is, or `None` for an array or an object.
    fn from_value(value: &Value) -> Option<Scalar> {
        Some(match value {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Scalar::Int(i),
                (None, Some(u)) => Scalar::from_u64(u),
                (None, None) => Scalar::from_f64(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Scalar::Str(s.as_str().into()),
            Value::Array(_) | Value::Object(_) => return None,
        })
    }

    fn from_u64(u: u64) -> Scalar {
        i64::try_from(u).map_or(Scalar::UInt(u), Scalar::Int)
    }

    fn from_f64(f: f64) -> Scalar {
        // 3.0 is 3; -0.0 is 0.
        if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 {
            Scalar::Int(f as i64)
        } else {
            Scalar::Float(f.to_bits())
        }
    }
}

/// The top-level scalar fields of a notification's `data`, and those of its
/// `before` object: what filters are matched against.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Fields {
    now: Vec<(Box<str>, Scalar)>,
    before: Vec<(Box<str>, Scalar)>,
}

/// What filters see of a notification's data.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Data<'a> {
    /// No data (such as a condensed batch's): nothing to check, so it
    /// passes every filter. A page must not miss a change it may show.
    Absent,
    /// The fields of data that is a JSON object.
    Fields(&'a Fields),
    /// Data that is not a JSON object, or that cannot be read (such as a
    /// number out of range): it passes no filter.
    Unreadable,
}

impl Fields {
    /// Reads `data`. `None` when it is not a JSON object, or cannot be read.
    ///
    /// A streaming read (no `serde_json::Value` tree): nested arrays and
    /// objects other than `before` are skipped, not built.
    pub(crate) fn parse(data: &str) -> Option<Fields> {
        // Only an object can have fields: skip the parser for anything else.
        if !data.trim_start().starts_with('{') {
            return None;
        }
        let mut deserializer = serde_json::Deserializer::from_str(data);
        let fields = deserializer.deserialize_map(FieldsVisitor { nested: false }).ok()?;
        deserializer.end().ok()?;
        Some(fields)
    }

    /// Every field with its value: the new ones, then the old ones from
    /// `before` (the fan-out looks both up, so a row that moves reaches the
    /// subscribers of either side).
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&str, &Scalar)> {
        self.now.iter().chain(&self.before).map(|(name, value)| (&**name, value))
    }

    fn now(&self, field: &str) -> Option<&Scalar> {
        self.now.iter().find(|(name, _)| &**name == field).map(|(_, v)| v)
    }

    /// The old value of `field`: from `before`, or unchanged.
    fn before(&self, field: &str) -> Option<&Scalar> {
        self.before.iter().find(|(name, _)| &**name == field).map(|(_, v)| v).or_else(|| self.now(field))
    }
}

/// Reads an object's scalar fields into [`Fields::now`]; at the top level
/// (`nested` false), a `before` object into [`Fields::before`].
struct FieldsVisitor {
    nested: bool,
}

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut fields = Fields::default();
        while let Some(name) = map.next_key::<Cow<'de, str>>()? {
            let before = !self.nested && name == BEFORE;
            match map.next_value_seed(FieldSeed { before })? {
                Field::Scalar(scalar) => fields.now.push((name.into(), scalar)),
                Field::Before(old) => fields.before = old.now,
                Field::Other => {}
            }
        }
        Ok(fields)
    }
}

/// One field's value, as filters see it.
enum Field {
    Scalar(Scalar),
    /// The top-level `before` object's fields.
    Before(Fields),
    /// An array or an object: no filter compares with it.
    Other,
}

/// Reads one value; `before` says it is the top-level `before` field.
struct FieldSeed {
    before: bool,
}

impl<'de> DeserializeSeed<'de> for FieldSeed {
    type Value = Field;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Field, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed {
    type Value = Field;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Field, E> {
        Ok(Field::Scalar(Scalar::Null))
    }

    fn visit_bool<E>(self, b: bool) -> Result<Field, E> {
        Ok(Field::Scalar(Scalar::Bool(b)))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Field, E> {
        Ok(Field::Scalar(Scalar::Int(i)))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Field, E> {
        Ok(Field::Scalar(Scalar::from_u64(u)))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Field, E> {
        Ok(Field::Scalar(Scalar::from_f64(f)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Field, E> {
        Ok(Field::Scalar(Scalar::Str(s.into())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Field, A::Error> {
        if self.before {
            return FieldsVisitor { nested: true }.visit_map(map).map(Field::Before);
        }
        IgnoredAny.visit_map(map)?;
        Ok(Field::Other)
    }
}

/// One condition: `field` equals one of `values`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Condition {
    field: Box<str>,
    values: Box<[Scalar]>,
}

/// An AND of conditions on top-level fields of `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Filter {
    conditions: Box<[Condition]>,
}

impl Filter {
    /// Whether a notification with these fields passes: its new values, or
    /// (an update that states them) its old ones. A field the data lacks
    /// fails its condition.
    pub(crate) fn matches(&self, fields: &Fields) -> bool {
        let passes = |old: bool| {
            self.conditions.iter().all(|c| {
                let value = if old { fields.before(&c.field) } else { fields.now(&c.field) };
                value.is_some_and(|v| c.values.contains(v))
            })
        };
        passes(false) || (!fields.before.is_empty() && passes(true))
    }

    /// The condition the fan-out's index files this filter under: the one
    /// with the fewest values (a notification can pass the filter only if
    /// its field takes one of them, new or old).
    pub(crate) fn indexed(&self) -> (&str, &[Scalar]) {
        let c = self.conditions.iter().min_by_key(|c| c.values.len()).expect("a filter has a condition");
        (&c.field, &c.values)
    }

    /// How many values the filter holds (what [`MAX_SESSION_VALUES`] counts).
    pub(crate) fn size(&self) -> usize {
        self.conditions.iter().map(|c| c.values.len()).sum()
    }
}

/// A filter a client asks for, as the [`permit`](crate::Identity::permit)
/// hook sees it: one or more alternatives (any may match), each an AND of
/// `field = value` / `field in values` conditions on top-level fields of a
/// notification's `data`.
///
/// A filtered subscription receives a notification without data (such as
/// a condensed batch's, which says only that the collection changed), but
/// never one whose data is not a JSON object or cannot be read (such as a
/// number out of range, `1e400`): what the filter cannot check, it holds
/// back.
///
/// ```
/// use tidings::Identity;
///
/// // Only the posts of the forums the user belongs to.
/// let id = Identity::user("7").permit(|collection, filter| match collection {
///     "posts" => filter.and_then(|f| f.values("forum_id")).is_some_and(|v| v.iter().all(|f| f == 1 || f == 3)),
///     "*" => false, // every collection, unfiltered: every post too
///     _ => true,
/// });
/// assert!(!id.may_subscribe("*", None));
/// assert!(!id.may_subscribe("posts", None));
/// assert!(id.may_subscribe("forums", None));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Where<'a> {
    filters: &'a [Filter],
}

impl<'a> Where<'a> {
    pub(crate) fn new(filters: &'a [Filter]) -> Self {
        Where { filters }
    }

    /// Every value `field` may take under this filter (the union over its
    /// alternatives), or `None` when some alternative does not constrain
    /// `field`: then any value can get through.
    pub fn values(&self, field: &str) -> Option<Vec<Value>> {
        let mut all = Vec::new();
        for filter in self.filters {
            let condition = filter.conditions.iter().find(|c| &*c.field == field)?;
            all.extend(condition.values.iter().map(Scalar::to_value));
        }
        Some(all)
    }

    /// How many alternatives the filter has (at least one).
    pub fn alternatives(&self) -> usize {
        self.filters.len()
    }
}

impl Scalar {
    fn to_value(&self) -> Value {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Int(i) => Value::from(*i),
            Scalar::UInt(u) => Value::from(*u),
            Scalar::Float(bits) => {
                serde_json::Number::from_f64(f64::from_bits(*bits)).map_or(Value::Null, Value::Number)
            }
            Scalar::Str(s) => Value::String(s.to_string()),
        }
    }
}

/// Why a filter was refused: malformed (`bad_frame`, `400`) or over a
/// limit (`forbidden`, `400`).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FilterError {
    Malformed(String),
    TooLarge(String),
}

impl FilterError {
    pub(crate) fn message(&self) -> &str {
        match self {
            FilterError::Malformed(m) | FilterError::TooLarge(m) => m,
        }
    }
}

/// Parses a `where`: one filter (an object) or alternatives, any of which
/// may match (an array of objects). An empty object or an empty array
/// means no filter: `None`.
pub(crate) fn parse_where(value: &Value) -> Result<Option<Box<[Filter]>>, FilterError> {
    let objects: Vec<&Map<String, Value>> = match value {
        Value::Object(o) => vec![o],
        Value::Array(items) => {
            if items.len() > MAX_FILTERS {
                return Err(FilterError::TooLarge(format!("at most {MAX_FILTERS} filters per collection")));
            }
            items
                .iter()
                .map(|item| item.as_object().ok_or_else(|| malformed("a filter must be a JSON object")))
                .collect::<Result<_, _>>()?
        }
        _ => return Err(malformed("`where` must be an object or an array of objects")),
    };
    let mut filters = Vec::with_capacity(objects.len());
    for object in objects {
        if object.is_empty() {
            // `{}` lets everything through: the whole subscription does.
            return Ok(None);
        }
        filters.push(parse_filter(object)?);
    }
    Ok((!filters.is_empty()).then(|| filters.into_boxed_slice()))
}

fn parse_filter(object: &Map<String, Value>) -> Result<Filter, FilterError> {
    if object.len() > MAX_CONDITIONS {
        return Err(FilterError::TooLarge(format!("at most {MAX_CONDITIONS} fields per filter")));
    }
    let conditions = object
        .iter()
        .map(|(field, value)| {
            check_field(field)?;
            let values: Vec<&Value> = match value {
                Value::Array(list) if list.is_empty() => {
                    return Err(malformed(&format!("`{field}`: an `in` list needs at least one value")));
                }
                Value::Array(list) if list.len() > MAX_VALUES => {
                    return Err(FilterError::TooLarge(format!("at most {MAX_VALUES} values per field")));
                }
                Value::Array(list) => list.iter().collect(),
                one => vec![one],
            };
            let values = values.into_iter().map(|v| scalar(field, v)).collect::<Result<_, _>>()?;
            Ok(Condition { field: field.as_str().into(), values })
        })
        .collect::<Result<_, _>>()?;
    Ok(Filter { conditions })
}

fn scalar(field: &str, value: &Value) -> Result<Scalar, FilterError> {
    if let Value::String(s) = value
        && s.len() > MAX_STRING_LEN
    {
        return Err(FilterError::TooLarge(format!("`{field}`: strings of at most {MAX_STRING_LEN} bytes")));
    }
    Scalar::from_value(value).ok_or_else(|| malformed(&format!("`{field}`: values must be scalars")))
}

/// A field name: 1 to [`MAX_FIELD_LEN`] bytes of ASCII letters, digits and
/// `_`, and not `before` (which holds old values). Such names need no
/// escaping, so an error can quote them whole.
fn check_field(field: &str) -> Result<(), FilterError> {
    let valid = !field.is_empty()
        && field.len() <= MAX_FIELD_LEN
        && field.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(malformed(&format!(
            "bad field name: 1 to {MAX_FIELD_LEN} bytes of A-Za-z0-9_ (got {} bytes)",
            field.len()
        )));
    }
    if field == BEFORE {
        return Err(malformed("`before` holds an update's old values and cannot be filtered on"));
    }
    Ok(())
}

fn malformed(message: &str) -> FilterError {
    FilterError::Malformed(message.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(v: Value) -> Filter {
        let mut filters = parse_where(&v).unwrap().unwrap().into_vec();
        assert_eq!(filters.len(), 1);
        filters.remove(0)
    }

    fn fields(v: Value) -> Fields {
        Fields::parse(&v.to_string()).unwrap()
    }

    #[test]
    fn equality_and_in_combine_with_and() {
        let f = filter(json!({"forum_id": 3, "kind": ["a", "b"]}));
        assert!(f.matches(&fields(json!({"id": 1, "forum_id": 3, "kind": "b"}))));
        assert!(!f.matches(&fields(json!({"id": 1, "forum_id": 4, "kind": "b"}))));
        assert!(!f.matches(&fields(json!({"id": 1, "forum_id": 3, "kind": "c"}))));
        assert!(!f.matches(&fields(json!({"id": 1, "kind": "a"}))), "a missing field fails");
        assert!(filter(json!({"n": 3})).matches(&fields(json!({"n": 3.0}))), "3.0 is 3");
        assert!(!filter(json!({"n": 3})).matches(&fields(json!({"n": "3"}))), "no coercion");
        assert!(filter(json!({"ok": [true, null]})).matches(&fields(json!({"ok": null}))));
        assert!(!filter(json!({"obj": 1})).matches(&fields(json!({"obj": {"a": 1}}))));
    }

    #[test]
    fn an_update_matches_its_old_or_its_new_row() {
        let moved = fields(json!({"id": 9, "forum_id": 5, "title": "t", "before": {"forum_id": 3}}));
        assert!(filter(json!({"forum_id": 3})).matches(&moved), "left forum 3");
        assert!(filter(json!({"forum_id": 5})).matches(&moved), "entered forum 5");
        assert!(!filter(json!({"forum_id": 4})).matches(&moved));
        // The old row is the new one with `before` laid over it, not a mix
        // of new and old values across conditions.
        let f = filter(json!({"forum_id": 3, "title": "t"}));
        assert!(f.matches(&moved), "old row: forum 3, title unchanged");
        let renamed =
            fields(json!({"forum_id": 5, "title": "new", "before": {"forum_id": 3, "title": "old"}}));
        assert!(!filter(json!({"forum_id": 3, "title": "new"})).matches(&renamed));
    }

    #[test]
    fn data_that_is_not_an_object_has_no_fields() {
        assert_eq!(Fields::parse("[1,2]"), None);
        assert_eq!(Fields::parse("7"), None);
        assert_eq!(Fields::parse("{bad"), None);
        assert!(Fields::parse(" {}").is_some());
        assert_eq!(Fields::parse(r#"{"a":1} x"#), None, "trailing garbage");
    }

    #[test]
    fn only_top_level_scalars_and_before_are_read() {
        let f = fields(json!({"n": 1, "s": "x\"y", "big": u64::MAX, "f": 1.5, "list": [1, {"a": 2}],
            "obj": {"n": 2}, "before": {"n": 0, "deep": {"x": 1}}}));
        assert_eq!(f.now("n"), Some(&Scalar::Int(1)));
        assert_eq!(f.now("s"), Some(&Scalar::Str("x\"y".into())));
        assert_eq!(f.now("big"), Some(&Scalar::UInt(u64::MAX)));
        assert_eq!(f.now("f"), Some(&Scalar::Float(1.5f64.to_bits())));
        assert_eq!((f.now("list"), f.now("obj"), f.now("before")), (None, None, None));
        assert_eq!(f.before("n"), Some(&Scalar::Int(0)));
        assert_eq!(f.before("s"), f.now("s"), "unchanged fields keep their value");
        assert_eq!(f.before.len(), 1, "nested objects inside `before` are skipped");
    }

    #[test]
    fn malformed_filters_are_refused() {
        for bad in [
            json!(3),
            json!([3]),
            json!({"a b": 1}),
            json!({"": 1}),
            json!({"before": 1}),
            json!({"a": []}),
            json!({"a": {"b": 1}}),
            json!({"a": [[1]]}),
            json!({"é": 1}),
        ] {
            assert!(matches!(parse_where(&bad), Err(FilterError::Malformed(_))), "{bad}");
        }
        assert_eq!(parse_where(&json!({})).unwrap(), None, "{{}} is no filter");
        assert_eq!(parse_where(&json!([])).unwrap(), None);
    }

    #[test]
    fn filters_are_bounded() {
        let too_many_values: Vec<u32> = (0..=MAX_VALUES as u32).collect();
        let too_many_fields: Map<String, Value> =
            (0..=MAX_CONDITIONS).map(|i| (format!("f{i}"), json!(1))).collect();
        let too_many_filters: Vec<Value> = (0..=MAX_FILTERS).map(|i| json!({"id": i})).collect();
        for big in [
            json!({"id": too_many_values}),
            Value::Object(too_many_fields),
            Value::Array(too_many_filters),
            json!({"s": "x".repeat(MAX_STRING_LEN + 1)}),
        ] {
            assert!(matches!(parse_where(&big), Err(FilterError::TooLarge(_))));
        }
        let long_field = "f".repeat(MAX_FIELD_LEN + 1);
        let error = parse_where(&json!({ long_field: 1 })).unwrap_err();
        assert!(error.message().len() < 100, "{}", error.message());
        let at_limit: Vec<u32> = (0..MAX_VALUES as u32).collect();
        assert_eq!(filter(json!({"id": at_limit})).size(), MAX_VALUES);
    }

    #[test]
    fn the_permit_hook_sees_the_values_a_field_may_take() {
        let filters =
            parse_where(&json!([{"forum_id": [1, 2]}, {"forum_id": 3, "kind": "q"}])).unwrap().unwrap();
        let w = Where::new(&filters);
        assert_eq!(w.values("forum_id"), Some(vec![json!(1), json!(2), json!(3)]));
        assert_eq!(w.values("kind"), None, "the first alternative leaves it free");
        assert_eq!(w.alternatives(), 2);
    }
}
