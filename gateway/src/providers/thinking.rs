//! The `thinking` tool type: one account-level switch mapped onto each provider's own reasoning
//! control (OpenAI's `reasoning_effort`, Anthropic's thinking budget, DeepSeek's reasoner model).

use serde_json::{json, Map, Value};
use wrapx_core::types::ProviderKind;

/// Anthropic's smallest accepted thinking budget.
pub const MIN_ANTHROPIC_BUDGET: u32 = 1024;

/// The settings of a tool of type `thinking`, read from its `tool_config` JSON:
/// `{"budget_tokens": 4096}` and/or `{"effort": "low"|"medium"|"high"}`; both optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ThinkingConfig {
    pub budget_tokens: Option<u32>,
    pub effort: Option<String>,
}

impl ThinkingConfig {
    /// Reads a tool's `tool_config`; unknown keys and wrong types are ignored.
    pub fn from_tool_config(config: &Value) -> Self {
        Self {
            budget_tokens: config
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            effort: config
                .get("effort")
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }

    /// The effort level: the one given, else derived from the budget, else "medium".
    pub fn effort(&self) -> &str {
        if let Some(e) = self.effort.as_deref() {
            return e;
        }
        match self.budget_tokens {
            Some(b) if b <= 2048 => "low",
            Some(b) if b > 8192 => "high",
            _ => "medium",
        }
    }

    /// The token budget: the one given (at least Anthropic's minimum), else from the effort.
    pub fn budget(&self) -> u32 {
        if let Some(b) = self.budget_tokens {
            return b.max(MIN_ANTHROPIC_BUDGET);
        }
        match self.effort.as_deref() {
            Some("minimal" | "low") => 2048,
            Some("high") => 16384,
            _ => 8192,
        }
    }
}

/// Turns reasoning on in a request body already in `kind`'s dialect.
///
/// - OpenAI: `reasoning_effort`.
/// - Anthropic: `thinking: {type: enabled, budget_tokens}`; `max_tokens` raised to budget plus
///   the answer's own allowance when it is not above the budget; `temperature`, `top_p` and
///   `top_k` removed and a forced `tool_choice` relaxed to auto, since Anthropic refuses them
///   with thinking on.
/// - DeepSeek: the model becomes `deepseek-reasoner`.
/// - Other OpenAI-compatible providers: nothing; their switches differ and unknown parameters
///   are refused by some of them.
pub fn apply_thinking(kind: ProviderKind, body: &mut Value, thinking: &ThinkingConfig) {
    let Some(obj) = body.as_object_mut() else {
        return;
    };
    match kind {
        ProviderKind::Openai => {
            obj.insert("reasoning_effort".into(), json!(thinking.effort()));
        }
        ProviderKind::Anthropic => anthropic(obj, thinking),
        ProviderKind::Deepseek => {
            obj.insert("model".into(), json!("deepseek-reasoner"));
        }
        ProviderKind::OpenaiCompatible => {}
    }
}

fn anthropic(obj: &mut Map<String, Value>, thinking: &ThinkingConfig) {
    let budget = thinking.budget();
    obj.insert(
        "thinking".into(),
        json!({"type": "enabled", "budget_tokens": budget}),
    );
    let max = obj.get("max_tokens").map_or(0, super::u32_of);
    if max <= budget {
        obj.insert(
            "max_tokens".into(),
            json!(budget.saturating_add(max.max(1))),
        );
    }
    for k in ["temperature", "top_p", "top_k"] {
        obj.remove(k);
    }
    if let Some(choice) = obj.get_mut("tool_choice") {
        if matches!(choice["type"].as_str(), Some("any" | "tool")) {
            let mut relaxed = json!({"type": "auto"});
            if let Some(d) = choice.get("disable_parallel_tool_use") {
                relaxed["disable_parallel_tool_use"] = d.clone();
            }
            *choice = relaxed;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn config_from_tool() {
        let c = ThinkingConfig::from_tool_config(&json!({"budget_tokens": 3000, "effort": 5}));
        assert_eq!(
            c,
            ThinkingConfig {
                budget_tokens: Some(3000),
                effort: None
            }
        );
        assert_eq!(c.effort(), "medium");
        assert_eq!(
            ThinkingConfig::from_tool_config(&json!(null)),
            ThinkingConfig::default()
        );
    }

    #[test]
    fn effort_and_budget_table() {
        let cases: &[(Option<u32>, Option<&str>, &str, u32)] = &[
            (None, None, "medium", 8192),
            (Some(100), None, "low", 1024),
            (Some(2048), None, "low", 2048),
            (Some(20000), None, "high", 20000),
            (None, Some("low"), "low", 2048),
            (None, Some("high"), "high", 16384),
            (Some(5000), Some("high"), "high", 5000),
        ];
        for &(b, e, effort, budget) in cases {
            let c = ThinkingConfig {
                budget_tokens: b,
                effort: e.map(str::to_owned),
            };
            assert_eq!((c.effort(), c.budget()), (effort, budget), "{c:?}");
        }
    }

    #[test]
    fn per_provider() {
        let t = ThinkingConfig {
            budget_tokens: Some(4096),
            effort: None,
        };
        let base = json!({"model": "m", "max_tokens": 1000, "temperature": 0.5, "top_p": 0.9,
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true}});
        let cases = [
            (
                ProviderKind::Openai,
                json!({"model": "m", "max_tokens": 1000, "temperature": 0.5,
                "top_p": 0.9, "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
                "reasoning_effort": "medium"}),
            ),
            (
                ProviderKind::Anthropic,
                json!({"model": "m", "max_tokens": 5096,
                "thinking": {"type": "enabled", "budget_tokens": 4096},
                "tool_choice": {"type": "auto", "disable_parallel_tool_use": true}}),
            ),
            (
                ProviderKind::Deepseek,
                json!({"model": "deepseek-reasoner", "max_tokens": 1000,
                "temperature": 0.5, "top_p": 0.9,
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true}}),
            ),
            (ProviderKind::OpenaiCompatible, base.clone()),
        ];
        for (kind, want) in cases {
            let mut body = base.clone();
            apply_thinking(kind, &mut body, &t);
            assert_eq!(body, want, "{kind}");
        }
        // A max_tokens above the budget is kept.
        let mut body = json!({"max_tokens": 9000});
        apply_thinking(ProviderKind::Anthropic, &mut body, &t);
        assert_eq!(body["max_tokens"], 9000);
        // Not an object: left alone.
        let mut body = json!([1]);
        apply_thinking(ProviderKind::Openai, &mut body, &t);
        assert_eq!(body, json!([1]));
    }
}
