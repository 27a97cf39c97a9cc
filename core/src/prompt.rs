//! The prompt compiler: turns a wrapped API's stored prompt configuration into the system
//! message and few-shot turns placed before the client's messages. Shared by the gateway (every
//! request) and the admin API (previews and the playground chat), so both say the same thing.

use serde::{Deserialize, Serialize};

/// One few-shot example: a user turn and the assistant's answer to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub user: String,
    pub assistant: String,
}

/// The stored configuration (`prompt_configs`), as the admin API saves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptConfig {
    pub role: String,
    pub instructions: String,
    pub rules: String,
    pub behavior: String,
    pub tone: String,
    pub examples: Vec<Example>,
}

/// What goes in front of the client's messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompiledPrompt {
    /// The system message; none when every section is empty.
    pub system: Option<String>,
    /// Few-shot turns, in order.
    pub examples: Vec<Example>,
}

impl PromptConfig {
    /// Sections in a fixed order under markdown headings; empty sections are left out, and the
    /// role leads without a heading because it reads as the opening sentence ("You are …").
    pub fn compile(&self) -> CompiledPrompt {
        let mut system = String::new();
        let role = self.role.trim();
        if !role.is_empty() {
            system.push_str(role);
        }
        for (heading, text) in [
            ("Instructions", &self.instructions),
            ("Rules", &self.rules),
            ("Behavior", &self.behavior),
            ("Tone", &self.tone),
        ] {
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            if !system.is_empty() {
                system.push_str("\n\n");
            }
            system.push_str("## ");
            system.push_str(heading);
            system.push('\n');
            system.push_str(text);
        }
        CompiledPrompt {
            system: (!system.is_empty()).then_some(system),
            examples: self.examples.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn config(
        role: &str,
        instructions: &str,
        rules: &str,
        behavior: &str,
        tone: &str,
    ) -> PromptConfig {
        PromptConfig {
            role: role.into(),
            instructions: instructions.into(),
            rules: rules.into(),
            behavior: behavior.into(),
            tone: tone.into(),
            examples: vec![],
        }
    }

    #[test]
    fn compiles_sections_in_order_and_skips_empty_ones() {
        let cases: &[(PromptConfig, Option<&str>)] = &[
            (PromptConfig::default(), None),
            (config("  ", "\n", "", "", ""), None),
            (config("You are a pirate.", "", "", "", ""), Some("You are a pirate.")),
            (
                config("You are a pirate.", "Answer in one line.", "Never reveal the map.", "Be helpful.", "Salty."),
                Some("You are a pirate.\n\n## Instructions\nAnswer in one line.\n\n## Rules\nNever reveal the map.\n\n## Behavior\nBe helpful.\n\n## Tone\nSalty."),
            ),
            (config("", "", "No swearing.", "", "Warm."), Some("## Rules\nNo swearing.\n\n## Tone\nWarm.")),
        ];
        for (input, expected) in cases {
            assert_eq!(input.compile().system.as_deref(), *expected, "{input:?}");
        }
    }

    #[test]
    fn examples_pass_through_in_order() {
        let c = PromptConfig {
            examples: vec![
                Example {
                    user: "hi".into(),
                    assistant: "arr".into(),
                },
                Example {
                    user: "bye".into(),
                    assistant: "yo ho".into(),
                },
            ],
            ..PromptConfig::default()
        };
        let compiled = c.compile();
        assert_eq!(compiled.examples, c.examples);
        assert_eq!(compiled.system, None);
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(serde_json::from_str::<PromptConfig>(r#"{"role":"x","colour":"red"}"#).is_err());
        assert!(serde_json::from_str::<PromptConfig>(r#"{"examples":[{"user":"a"}]}"#).is_err());
        let ok: PromptConfig = serde_json::from_str(r#"{"role":"x"}"#).unwrap();
        assert_eq!(ok.role, "x");
    }
}
