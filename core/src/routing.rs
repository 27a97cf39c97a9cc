//! A wrapped API's routing (API.md, "Routing: retries and fallbacks"): which provider and model
//! each attempt goes to, how many attempts a request gets, and when a failing target rests.
//! The admin API checks a body with [`RoutingInput::validate`] and stores the [`Routing`] it
//! gives (in `wrapped_apis.routing` and in each config version); the gateway follows it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How the first target of a request is chosen; the others follow as fallbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The targets in their order.
    #[default]
    Fallback,
    /// One target picked by weight, then the others in their order.
    Weighted,
}

/// A validated routing, as stored and as the gateway reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    pub strategy: Strategy,
    pub targets: Vec<Target>,
    pub retry: Retry,
    pub cooldown: Cooldown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub provider_id: Uuid,
    pub model: String,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Answers that move the request on to another attempt.
    pub on_status: Vec<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cooldown {
    /// Failures in a row that put a target to rest; 0: targets never rest (and failures are
    /// not even counted).
    pub failures: u32,
    /// How long it rests.
    pub seconds: u32,
}

pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
pub const DEFAULT_ON_STATUS: [u16; 5] = [429, 500, 502, 503, 504];
pub const MAX_TARGETS: usize = 10;
pub const MAX_ATTEMPTS: u32 = 10;
const MAX_WEIGHT: i64 = 1_000_000;
const MAX_MODEL_CHARS: usize = 200;
const MAX_COOLDOWN_FAILURES: i64 = 1_000;
const MAX_COOLDOWN_SECONDS: i64 = 86_400;

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            on_status: DEFAULT_ON_STATUS.to_vec(),
        }
    }
}

impl Default for Cooldown {
    fn default() -> Self {
        Self {
            failures: 3,
            seconds: 30,
        }
    }
}

impl Routing {
    /// The routing of a wrapped API that has none: its own provider and model, once.
    pub fn single(provider_id: Uuid, model: &str) -> Self {
        Self {
            strategy: Strategy::Fallback,
            targets: vec![Target {
                provider_id,
                model: model.to_owned(),
                weight: 1,
            }],
            retry: Retry {
                max_attempts: 1,
                on_status: DEFAULT_ON_STATUS.to_vec(),
            },
            cooldown: Cooldown::default(),
        }
    }

    /// The providers the targets use, each once.
    pub fn provider_ids(&self) -> Vec<Uuid> {
        let mut ids: Vec<Uuid> = self.targets.iter().map(|t| t.provider_id).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

/// The body of `PUT …/routing` as sent: numbers wide and the strategy a word, so that every
/// mistake gets its own message from [`RoutingInput::validate`] rather than a parser's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingInput {
    #[serde(default)]
    pub strategy: Option<String>,
    pub targets: Vec<TargetInput>,
    #[serde(default)]
    pub retry: Option<RetryInput>,
    #[serde(default)]
    pub cooldown: Option<CooldownInput>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetInput {
    pub provider_id: Uuid,
    pub model: String,
    #[serde(default)]
    pub weight: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryInput {
    #[serde(default)]
    pub max_attempts: Option<i64>,
    #[serde(default)]
    pub on_status: Option<Vec<i64>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CooldownInput {
    #[serde(default)]
    pub failures: Option<i64>,
    #[serde(default)]
    pub seconds: Option<i64>,
}

/// Why a routing body is refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRouting(pub String);

fn invalid<T>(message: impl Into<String>) -> Result<T, InvalidRouting> {
    Err(InvalidRouting(message.into()))
}

impl RoutingInput {
    /// The routing this body asks for, with the defaults filled in, or what is wrong with it.
    pub fn validate(self) -> Result<Routing, InvalidRouting> {
        let strategy = match self.strategy.as_deref() {
            None | Some("fallback") => Strategy::Fallback,
            Some("weighted") => Strategy::Weighted,
            Some(other) => {
                return invalid(format!(
                    "strategy must be \"fallback\" or \"weighted\", not {other:?}"
                ))
            }
        };
        if self.targets.is_empty() {
            return invalid("targets must list at least one target");
        }
        if self.targets.len() > MAX_TARGETS {
            return invalid(format!("targets may list at most {MAX_TARGETS} targets"));
        }
        let mut targets = Vec::with_capacity(self.targets.len());
        for (i, t) in self.targets.into_iter().enumerate() {
            let model = t.model.trim().to_owned();
            if model.is_empty() || model.chars().count() > MAX_MODEL_CHARS {
                return invalid(format!(
                    "targets[{i}].model must be 1 to {MAX_MODEL_CHARS} characters"
                ));
            }
            let weight = t.weight.unwrap_or(1);
            if !(1..=MAX_WEIGHT).contains(&weight) {
                return invalid(format!(
                    "targets[{i}].weight must be a whole number from 1 to {MAX_WEIGHT}, not {weight}"
                ));
            }
            targets.push(Target {
                provider_id: t.provider_id,
                model,
                weight: u32::try_from(weight).unwrap_or(1),
            });
        }
        let retry = match self.retry {
            None => Retry::default(),
            Some(r) => {
                let max_attempts = r.max_attempts.unwrap_or(i64::from(DEFAULT_MAX_ATTEMPTS));
                if !(1..=i64::from(MAX_ATTEMPTS)).contains(&max_attempts) {
                    return invalid(format!(
                        "retry.max_attempts must be from 1 to {MAX_ATTEMPTS}, not {max_attempts}"
                    ));
                }
                let mut on_status = Vec::new();
                for code in r
                    .on_status
                    .unwrap_or_else(|| DEFAULT_ON_STATUS.iter().map(|&c| i64::from(c)).collect())
                {
                    if !(400..=599).contains(&code) {
                        return invalid(format!(
                            "retry.on_status may hold only statuses from 400 to 599, not {code}"
                        ));
                    }
                    on_status.push(u16::try_from(code).unwrap_or(500));
                }
                on_status.sort_unstable();
                on_status.dedup();
                Retry {
                    max_attempts: u32::try_from(max_attempts).unwrap_or(1),
                    on_status,
                }
            }
        };
        let cooldown = match self.cooldown {
            None => Cooldown::default(),
            Some(c) => {
                let defaults = Cooldown::default();
                let failures = c.failures.unwrap_or(i64::from(defaults.failures));
                if !(0..=MAX_COOLDOWN_FAILURES).contains(&failures) {
                    return invalid(format!(
                        "cooldown.failures must be from 0 (never rest) to {MAX_COOLDOWN_FAILURES}, not {failures}"
                    ));
                }
                let seconds = c.seconds.unwrap_or(i64::from(defaults.seconds));
                if !(1..=MAX_COOLDOWN_SECONDS).contains(&seconds) {
                    return invalid(format!(
                        "cooldown.seconds must be from 1 to {MAX_COOLDOWN_SECONDS}, not {seconds}"
                    ));
                }
                Cooldown {
                    failures: u32::try_from(failures).unwrap_or(1),
                    seconds: u32::try_from(seconds).unwrap_or(1),
                }
            }
        };
        Ok(Routing {
            strategy,
            targets,
            retry,
            cooldown,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Routing, InvalidRouting> {
        serde_json::from_value::<RoutingInput>(v)
            .unwrap()
            .validate()
    }

    #[test]
    fn defaults_fill_what_is_left_out() {
        let id = Uuid::now_v7();
        let r = parse(json!({"targets": [{"provider_id": id, "model": " m "}]})).unwrap();
        assert_eq!(r.strategy, Strategy::Fallback);
        assert_eq!(r.targets[0].model, "m");
        assert_eq!(r.targets[0].weight, 1);
        assert_eq!(r.retry, Retry::default());
        assert_eq!(r.cooldown, Cooldown::default());
        // Stored and read back unchanged.
        let stored = serde_json::to_value(&r).unwrap();
        assert_eq!(serde_json::from_value::<Routing>(stored).unwrap(), r);
    }

    #[test]
    fn each_mistake_is_named() {
        let id = Uuid::now_v7();
        let t = json!([{"provider_id": id, "model": "m"}]);
        for (body, needle) in [
            (json!({"strategy": "random", "targets": t}), "strategy"),
            (json!({"targets": []}), "at least one"),
            (
                json!({"targets": [{"provider_id": id, "model": "m", "weight": 0}]}),
                "targets[0].weight",
            ),
            (
                json!({"targets": [{"provider_id": id, "model": "m", "weight": -3}]}),
                "targets[0].weight",
            ),
            (
                json!({"targets": [{"provider_id": id, "model": ""}]}),
                "targets[0].model",
            ),
            (
                json!({"targets": t, "retry": {"max_attempts": 0}}),
                "max_attempts",
            ),
            (
                json!({"targets": t, "retry": {"max_attempts": 11}}),
                "max_attempts",
            ),
            (
                json!({"targets": t, "retry": {"on_status": [399]}}),
                "on_status",
            ),
            (
                json!({"targets": t, "retry": {"on_status": [600]}}),
                "on_status",
            ),
            (
                json!({"targets": t, "cooldown": {"seconds": 0}}),
                "cooldown.seconds",
            ),
            (
                json!({"targets": t, "cooldown": {"failures": -1}}),
                "cooldown.failures",
            ),
            (
                json!({"targets": t, "cooldown": {"failures": 1001}}),
                "cooldown.failures",
            ),
        ] {
            let err = parse(body.clone()).unwrap_err();
            assert!(err.0.contains(needle), "{body}: {err}");
        }
        assert!(serde_json::from_value::<RoutingInput>(json!({"targets": t, "extra": 1})).is_err());
        // 0 failures: targets never rest.
        let never = parse(json!({"targets": t, "cooldown": {"failures": 0}})).unwrap();
        assert_eq!(never.cooldown.failures, 0);
    }

    #[test]
    fn statuses_are_sorted_once_each() {
        let id = Uuid::now_v7();
        let r = parse(json!({"strategy": "weighted", "targets": [{"provider_id": id, "model": "m", "weight": 3}],
            "retry": {"max_attempts": 10, "on_status": [503, 429, 503]}, "cooldown": {"failures": 1, "seconds": 5}}))
        .unwrap();
        assert_eq!(r.strategy, Strategy::Weighted);
        assert_eq!(r.retry.on_status, vec![429, 503]);
        assert_eq!(r.retry.max_attempts, 10);
        assert_eq!(
            r.cooldown,
            Cooldown {
                failures: 1,
                seconds: 5
            }
        );
    }
}
