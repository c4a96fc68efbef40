//! The model's own chat template, rendered with minijinja set up like transformers' Jinja
//! environment (`trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`, a Python-style
//! `tojson`, and Python string/dict methods through minijinja-contrib's pycompat).

use anyhow::{Context, Result, anyhow, bail};
use minijinja::value::{Kwargs, Value as JinjaValue, ValueKind};
use minijinja::{Environment, Error as JinjaError, ErrorKind};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

use super::tokenizer::{read_json_if_present, token_text};
use crate::data::chat::Message;

const TEMPLATE_NAME: &str = "chat_template";

pub struct ChatTemplate {
    env: Environment<'static>,
    /// Where the template came from, for error messages.
    origin: String,
    /// `bos_token`, `eos_token`, ... as transformers passes them to the template.
    special_tokens: BTreeMap<String, String>,
}

impl ChatTemplate {
    /// Finds the template in a model directory in transformers' order of preference:
    /// `chat_template.jinja`, then `chat_template.json` (`{"chat_template": ...}`), then the
    /// `chat_template` of `tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tokenizer_config = read_json_if_present(&dir.join("tokenizer_config.json"))?;
        let special_tokens = special_tokens(tokenizer_config.as_ref());
        let jinja = dir.join("chat_template.jinja");
        let json = dir.join("chat_template.json");
        let (source, origin) = if jinja.exists() {
            let text = std::fs::read_to_string(&jinja)
                .with_context(|| format!("cannot read {}", jinja.display()))?;
            (text, jinja.display().to_string())
        } else if let Some(v) = read_json_if_present(&json)? {
            let text = template_text(v.get("chat_template"))
                .with_context(|| format!("{} has no usable \"chat_template\"", json.display()))?;
            (text, json.display().to_string())
        } else if let Some(text) = tokenizer_config
            .as_ref()
            .and_then(|c| template_text(c.get("chat_template")).ok())
        {
            (
                text,
                format!(
                    "{} (chat_template)",
                    dir.join("tokenizer_config.json").display()
                ),
            )
        } else {
            bail!(
                "no chat template in {}: expected chat_template.jinja, chat_template.json or a \
                 chat_template in tokenizer_config.json",
                dir.display()
            );
        };
        Self::from_source(source, origin, special_tokens)
    }

    /// Compiles template `source`; `origin` names it in errors.
    pub fn from_source(
        source: String,
        origin: impl Into<String>,
        special_tokens: BTreeMap<String, String>,
    ) -> Result<Self> {
        let origin = origin.into();
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // Chat text is not HTML: never escape.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_filter("tojson", python_tojson);
        env.add_template_owned(TEMPLATE_NAME, source)
            .map_err(|e| anyhow!("{e:#}"))
            .with_context(|| format!("cannot compile chat template {origin}"))?;
        Ok(Self {
            env,
            origin,
            special_tokens,
        })
    }

    /// Renders a conversation; `add_generation_prompt` opens an assistant turn at the end.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        self.render_with(messages, add_generation_prompt, false)
    }

    /// As `render`, with `add_vision_id` ("Picture 1: " before each image) as the processor allows.
    pub fn render_with(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
        add_vision_id: bool,
    ) -> Result<String> {
        let mut ctx: BTreeMap<String, JinjaValue> = self
            .special_tokens
            .iter()
            .map(|(k, v)| (k.clone(), JinjaValue::from(v.clone())))
            .collect();
        ctx.insert("messages".into(), JinjaValue::from_serialize(messages));
        ctx.insert(
            "add_generation_prompt".into(),
            JinjaValue::from(add_generation_prompt),
        );
        ctx.insert("add_vision_id".into(), JinjaValue::from(add_vision_id));
        let tmpl = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| anyhow!("{e:#}"))?;
        tmpl.render(ctx)
            .map_err(|e| anyhow!("{e:#}"))
            .with_context(|| format!("chat template {} failed to render", self.origin))
    }
}

/// The template text of a `chat_template` entry: a string, or transformers' list of named
/// templates, of which the one called "default" is used.
fn template_text(v: Option<&Value>) -> Result<String> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(named)) => named
            .iter()
            .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
            .and_then(|t| t.get("template").and_then(Value::as_str))
            .map(str::to_string)
            .ok_or_else(|| anyhow!("a list of chat templates without one named \"default\"")),
        Some(_) => bail!("chat_template is neither a string nor a list of named templates"),
        None => bail!("no chat_template key"),
    }
}

/// The special tokens transformers exposes to templates, read from tokenizer_config.json.
fn special_tokens(config: Option<&Value>) -> BTreeMap<String, String> {
    ["bos_token", "eos_token", "pad_token", "unk_token"]
        .into_iter()
        .filter_map(|k| Some((k.to_string(), token_text(config?.get(k))?)))
        .collect()
}

/// Templates call `raise_exception("...")` to reject conversations they cannot render.
fn raise_exception(message: String) -> Result<JinjaValue, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=..., sort_keys=...)`.
/// minijinja's own filter escapes `<`, `>`, `&` and `'` for HTML and uses compact separators,
/// which would change the rendered prompt; Python writes `", "` and `": "`.
fn python_tojson(value: JinjaValue, kwargs: Kwargs) -> Result<JinjaValue, JinjaError> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    // Accepted for signature compatibility; output is never ASCII-escaped, as in transformers.
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_python_json(&value, indent, sort_keys.unwrap_or(false), 0, &mut out)?;
    Ok(JinjaValue::from_safe_string(out))
}

/// Python's `json.dumps` layout, keys in insertion order unless sorted. Written by hand because
/// serde_json's formatters cannot produce Python's default separators (`", "`, `": "`), and
/// going through `serde_json::Value` would reorder keys.
fn write_python_json(
    v: &JinjaValue,
    indent: Option<usize>,
    sort_keys: bool,
    level: usize,
    out: &mut String,
) -> Result<(), JinjaError> {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    let (open, close, entries) = match v.kind() {
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<(Option<String>, JinjaValue)> =
                v.try_iter()?.map(|x| (None, x)).collect();
            ('[', ']', items)
        }
        ValueKind::Map => {
            let mut items = Vec::new();
            for key in v.try_iter()? {
                let item = v.get_item(&key)?;
                items.push((
                    Some(key.as_str().map_or_else(|| key.to_string(), str::to_string)),
                    item,
                ));
            }
            if sort_keys {
                items.sort_by(|a, b| a.0.cmp(&b.0));
            }
            ('{', '}', items)
        }
        _ => {
            let scalar = serde_json::to_string(v).map_err(|e| {
                JinjaError::new(ErrorKind::InvalidOperation, format!("tojson: {e}"))
            })?;
            out.push_str(&scalar);
            return Ok(());
        }
    };
    out.push(open);
    for (i, (key, item)) in entries.iter().enumerate() {
        if i > 0 {
            out.push_str(item_sep);
        }
        newline(out, level + 1);
        if let Some(key) = key {
            out.push_str(&Value::String(key.clone()).to_string());
            out.push_str(": ");
        }
        write_python_json(item, indent, sort_keys, level + 1, out)?;
    }
    if !entries.is_empty() {
        newline(out, level);
    }
    out.push(close);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::chat::{Part, Role};

    fn template(src: &str) -> ChatTemplate {
        ChatTemplate::from_source(src.to_string(), "test", BTreeMap::new()).unwrap()
    }

    #[test]
    fn blocks_are_trimmed_like_transformers() {
        // trim_blocks drops the newline after a block tag, lstrip_blocks the indentation before it.
        let t = template(
            "{% for m in messages %}\n    {% if m.role == 'user' %}\nU:{{ m.content[0].text }}\n    {% endif %}\n{% endfor %}",
        );
        let out = t.render(&[Message::text(Role::User, "hi")], false).unwrap();
        assert_eq!(out, "U:hi\n");
    }

    #[test]
    fn python_methods_and_raise_exception() {
        let t = template(
            "{{ messages[0].content[0].text.strip().upper() }}{% if messages|length > 1 %}{{ raise_exception('only one message') }}{% endif %}",
        );
        assert_eq!(
            t.render(&[Message::text(Role::User, "  ok ")], false)
                .unwrap(),
            "OK"
        );
        let two = [
            Message::text(Role::User, "a"),
            Message::text(Role::User, "b"),
        ];
        let msg = format!("{:#}", t.render(&two, false).unwrap_err());
        assert!(msg.contains("only one message"), "{msg}");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let t = template("{{ messages[0] | tojson }}|{{ messages[0].content | tojson(indent=2) }}");
        let m = Message::new(
            Role::User,
            vec![Part::Text {
                text: "<b>é</b>".into(),
            }],
        );
        let out = t.render(&[m], false).unwrap();
        // json.dumps({"role": "user", "content": [{"type": "text", "text": "<b>é</b>"}]}, ensure_ascii=False)
        let (compact, indented) = out.split_once('|').unwrap();
        assert_eq!(
            compact,
            r#"{"role": "user", "content": [{"type": "text", "text": "<b>é</b>"}]}"#
        );
        assert_eq!(
            indented,
            "[\n  {\n    \"type\": \"text\",\n    \"text\": \"<b>é</b>\"\n  }\n]"
        );
    }

    #[test]
    fn named_template_list_uses_default() {
        let v = serde_json::json!([{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]);
        assert_eq!(template_text(Some(&v)).unwrap(), "D");
        assert!(template_text(Some(&serde_json::json!(3))).is_err());
    }

    #[test]
    fn syntax_error_names_the_template() {
        let err = ChatTemplate::from_source(
            "{% if %}".into(),
            "model/chat_template.jinja",
            BTreeMap::new(),
        );
        let msg = format!("{:#}", err.err().unwrap());
        assert!(msg.contains("model/chat_template.jinja"), "{msg}");
    }
}
