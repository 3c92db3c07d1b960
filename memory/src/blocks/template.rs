//! Templates: typed structure for common blocks. A map template names its fields and their types;
//! a list template the shape of its items. Every write to a templated block is validated here
//! first, and the value it stores is the canonical one returned (defaults filled, types exact).

use serde_json::{Map, Value};

use super::Shape;

/// The strategies a preferences block may name (the runtime's strategy names; a runtime test
/// checks they agree).
pub const STRATEGY_NAMES: &[&str] = &["baseline", "banded", "urgent"];

/// The largest amount in minor units a field may hold: 2^53 − 1, exact in a double, as every
/// amount in a transcript must be.
pub const MINOR_UNITS_MAX: i64 = (1 << 53) - 1;

/// At most this many items in one list field (preferred providers and the like).
pub const LIST_FIELD_ITEMS_MAX: usize = 64;

/// The structured kinds of block Pactum knows.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Template {
    /// Who the agent is: name, role, style, notes.
    Persona,
    /// The person the agent works for.
    Partner,
    /// Negotiation defaults the runtime reads.
    Preferences,
    /// A task list: items with a title and a done flag.
    Tasks,
    /// Free text the agent keeps for itself.
    Scratchpad,
}

#[derive(Clone, Copy, Debug)]
enum FieldType {
    /// A one-line string of at most this many characters.
    Line(usize),
    /// Free text.
    Text,
    /// A non-negative integer (money in minor units).
    MinorUnits,
    /// An ISO 4217 code: three uppercase ASCII letters.
    Currency,
    /// A list of identifiers (provider ids).
    Ids,
    /// One of these names.
    OneOf(&'static [&'static str]),
}

struct Field {
    name: &'static str,
    kind: FieldType,
    required: bool,
    help: &'static str,
}

const PERSONA: &[Field] = &[
    Field { name: "name", kind: FieldType::Line(80), required: true, help: "what the agent is called" },
    Field { name: "role", kind: FieldType::Line(200), required: false, help: "what it does for its partner" },
    Field { name: "style", kind: FieldType::Line(200), required: false, help: "how it talks and negotiates" },
    Field { name: "notes", kind: FieldType::Text, required: false, help: "anything else" },
];

const PARTNER: &[Field] = &[
    Field { name: "name", kind: FieldType::Line(80), required: true, help: "the person's name" },
    Field { name: "preferred_name", kind: FieldType::Line(80), required: false, help: "how to address them" },
    Field { name: "timezone", kind: FieldType::Line(64), required: false, help: "an IANA zone such as Europe/Paris" },
    Field { name: "notes", kind: FieldType::Text, required: false, help: "what the agent has learnt about them" },
];

const PREFERENCES: &[Field] = &[
    Field {
        name: "default_max_price_minor",
        kind: FieldType::MinorUnits,
        required: false,
        help: "the most to pay when negotiate gets no --max-price, in minor units",
    },
    Field {
        name: "default_currency",
        kind: FieldType::Currency,
        required: false,
        help: "the currency of default_max_price_minor (ISO 4217)",
    },
    Field {
        name: "preferred_providers",
        kind: FieldType::Ids,
        required: false,
        help: "providers to choose when offers tie",
    },
    Field {
        name: "blocked_providers",
        kind: FieldType::Ids,
        required: false,
        help: "providers never to negotiate with",
    },
    Field {
        name: "default_strategy",
        kind: FieldType::OneOf(STRATEGY_NAMES),
        required: false,
        help: "the strategy when negotiate gets no --strategy",
    },
];

const TASK: &[Field] = &[
    Field { name: "title", kind: FieldType::Line(500), required: true, help: "what to do" },
    Field { name: "done", kind: FieldType::OneOf(&["true", "false"]), required: false, help: "true once done" },
];

impl Template {
    pub const ALL: [Template; 5] = [Self::Persona, Self::Partner, Self::Preferences, Self::Tasks, Self::Scratchpad];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Persona => "persona",
            Self::Partner => "partner",
            Self::Preferences => "preferences",
            Self::Tasks => "tasks",
            Self::Scratchpad => "scratchpad",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|template| template.as_str() == text)
    }

    /// How blocks of this template are stored.
    pub fn shape(self) -> Shape {
        match self {
            Self::Persona | Self::Partner | Self::Preferences => Shape::Map,
            Self::Tasks => Shape::List,
            Self::Scratchpad => Shape::Text,
        }
    }

    fn fields(self) -> &'static [Field] {
        match self {
            Self::Persona => PERSONA,
            Self::Partner => PARTNER,
            Self::Preferences => PREFERENCES,
            Self::Tasks => TASK,
            Self::Scratchpad => &[],
        }
    }

    /// One line per field: name, type, whether required, what it means (for help and errors).
    pub fn describe(self) -> Vec<String> {
        self.fields()
            .iter()
            .map(|field| {
                let kind = match field.kind {
                    FieldType::Line(max) => format!("string, at most {max} characters"),
                    FieldType::Text => "text".to_owned(),
                    FieldType::MinorUnits => "integer >= 0 (minor units)".to_owned(),
                    FieldType::Currency => "ISO 4217 code".to_owned(),
                    FieldType::Ids => format!("list of ids, at most {LIST_FIELD_ITEMS_MAX}"),
                    FieldType::OneOf(names) if names == ["true", "false"] => "boolean".to_owned(),
                    FieldType::OneOf(names) => format!("one of {}", names.join(", ")),
                };
                let required = if field.required { ", required" } else { "" };
                format!("{} ({kind}{required}): {}", field.name, field.help)
            })
            .collect()
    }

    /// Checks a whole value for a block of this template and returns its canonical form. Map
    /// templates take a JSON object, the task list a JSON array of items (a bare string is a
    /// task title). The error names the field and what it must be.
    pub fn validate(self, value: &Value) -> Result<Value, String> {
        match self.shape() {
            Shape::Map => validate_object(self.fields(), value, "").map(Value::Object),
            Shape::List => {
                let Value::Array(items) = value else {
                    return Err(format!("a {} block holds a JSON array of items", self.as_str()));
                };
                items
                    .iter()
                    .enumerate()
                    .map(|(index, item)| self.validate_item(item).map_err(|e| format!("item {index}: {e}")))
                    .collect::<Result<Vec<_>, _>>()
                    .map(Value::Array)
            }
            Shape::Log | Shape::Text => match value {
                Value::String(_) => Ok(value.clone()),
                _ => Err(format!("a {} block holds text", self.as_str())),
            },
        }
    }

    /// Checks one list item (the task list); a string is a title.
    pub fn validate_item(self, item: &Value) -> Result<Value, String> {
        let item = match item {
            Value::String(title) => serde_json::json!({ "title": title, "done": false }),
            other => other.clone(),
        };
        let mut object = validate_object(self.fields(), &item, "")?;
        if self == Self::Tasks {
            object.entry("done").or_insert(Value::Bool(false));
        }
        Ok(Value::Object(object))
    }
}

fn validate_object(fields: &[Field], value: &Value, _path: &str) -> Result<Map<String, Value>, String> {
    let Value::Object(object) = value else {
        return Err("expected a JSON object".to_owned());
    };
    let mut out = Map::new();
    for (key, field_value) in object {
        let Some(field) = fields.iter().find(|field| field.name == key) else {
            let known: Vec<&str> = fields.iter().map(|field| field.name).collect();
            return Err(format!("unknown field {key:?}; the fields are {}", known.join(", ")));
        };
        if field_value.is_null() {
            if field.required {
                return Err(format!("field {key:?} is required"));
            }
            continue;
        }
        out.insert(key.clone(), validate_field(field, field_value).map_err(|e| format!("field {key:?}: {e}"))?);
    }
    if let Some(missing) = fields.iter().find(|field| field.required && !out.contains_key(field.name)) {
        return Err(format!("field {:?} is required ({})", missing.name, missing.help));
    }
    if out.contains_key("default_max_price_minor") != out.contains_key("default_currency") {
        return Err("default_max_price_minor and default_currency go together: set both or neither".to_owned());
    }
    if let (Some(Value::Array(preferred)), Some(Value::Array(blocked))) =
        (out.get("preferred_providers"), out.get("blocked_providers"))
        && let Some(both) = preferred.iter().find(|id| blocked.contains(id))
    {
        return Err(format!("provider {both} is both preferred and blocked"));
    }
    Ok(out)
}

fn validate_field(field: &Field, value: &Value) -> Result<Value, String> {
    match field.kind {
        FieldType::Line(max) => match value {
            Value::String(text) if text.contains('\n') => Err("must be one line".to_owned()),
            Value::String(text) if text.chars().count() > max => Err(format!("at most {max} characters")),
            Value::String(text) if field.required && text.trim().is_empty() => Err("must not be empty".to_owned()),
            Value::String(_) => Ok(value.clone()),
            _ => Err("must be a string".to_owned()),
        },
        FieldType::Text => match value {
            Value::String(_) => Ok(value.clone()),
            _ => Err("must be a string".to_owned()),
        },
        FieldType::MinorUnits => match value.as_i64() {
            Some(amount) if (0..=MINOR_UNITS_MAX).contains(&amount) && value.is_i64() => Ok(Value::from(amount)),
            _ => Err(format!(
                "must be a whole number of minor units from 0 to {MINOR_UNITS_MAX} (5 cents is 5, not 0.05)"
            )),
        },
        FieldType::Currency => match value {
            Value::String(code) if code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()) => Ok(value.clone()),
            _ => Err("must be an ISO 4217 code such as USD".to_owned()),
        },
        FieldType::Ids => {
            let Value::Array(items) = value else {
                return Err("must be a list of ids".to_owned());
            };
            if items.len() > LIST_FIELD_ITEMS_MAX {
                return Err(format!("at most {LIST_FIELD_ITEMS_MAX} ids"));
            }
            let mut ids: Vec<Value> = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(id)
                        if !id.is_empty()
                            && id.len() <= 128
                            && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
                    {
                        if !ids.contains(item) {
                            ids.push(item.clone());
                        }
                    }
                    _ => return Err(format!("{item} is not an id (letters, digits, - _ . :)")),
                }
            }
            Ok(Value::Array(ids))
        }
        FieldType::OneOf(names) if names == ["true", "false"] => match value {
            Value::Bool(_) => Ok(value.clone()),
            _ => Err("must be true or false".to_owned()),
        },
        FieldType::OneOf(names) => match value {
            Value::String(name) if names.contains(&name.as_str()) => Ok(value.clone()),
            _ => Err(format!("must be one of {}", names.join(", "))),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn preferences_take_typed_fields_and_refuse_the_rest() {
        let ok = Template::Preferences
            .validate(&json!({"default_max_price_minor": 500, "default_currency": "EUR", "preferred_providers": ["a", "a", "b"]}))
            .expect("valid");
        assert_eq!(ok["preferred_providers"], json!(["a", "b"]));
        for (value, needle) in [
            (json!({"default_max_price_minor": 0.5, "default_currency": "EUR"}), "whole number"),
            (json!({"default_max_price_minor": -1, "default_currency": "EUR"}), "whole number"),
            (json!({"default_max_price_minor": 5}), "go together"),
            (json!({"default_currency": "eur", "default_max_price_minor": 5}), "ISO 4217"),
            (json!({"default_strategy": "greedy"}), "one of baseline, banded, urgent"),
            (json!({"colour": "blue"}), "unknown field \"colour\""),
            (json!({"preferred_providers": ["x"], "blocked_providers": ["x"]}), "both preferred and blocked"),
            (json!(["not", "an", "object"]), "JSON object"),
        ] {
            let error = Template::Preferences.validate(&value).expect_err("invalid");
            assert!(error.contains(needle), "{value}: {error}");
        }
    }

    #[test]
    fn tasks_take_titles_or_items() {
        let tasks = Template::Tasks.validate(&json!(["buy weather data", {"title": "pay", "done": true}])).expect("ok");
        assert_eq!(tasks, json!([{"title": "buy weather data", "done": false}, {"title": "pay", "done": true}]));
        assert!(Template::Tasks.validate(&json!([{"done": true}])).expect_err("no title").contains("title"));
        assert!(Template::Persona.validate(&json!({})).expect_err("no name").contains("\"name\" is required"));
    }
}
