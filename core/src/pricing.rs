//! The pricing table of `config/pricing.toml`: the cost of a request from its model and token
//! counts, and the plans with their monthly price and request quota. Shared because the worker
//! computes costs with it and the admin API shows the prices.
//!
//! Money is `rust_decimal::Decimal` throughout, rounded to the 8 decimal places of the
//! database's `numeric(18, 8)` columns, so sums in PostgreSQL equal sums here.

use std::{collections::BTreeMap, path::Path};

use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;

use crate::{types::PlanType, Error, Result};

/// The table shipped in `config/pricing.toml`, built in as the fallback when the configured
/// file is the default relative path and the binary runs from another directory.
pub const DEFAULT_PRICING_TOML: &str = include_str!("../../config/pricing.toml");

/// The default value of `worker.pricing_file`.
pub const DEFAULT_PRICING_FILE: &str = "config/pricing.toml";

/// Decimal places kept for money (the scale of `api_logs.cost` and `billing.amount`).
pub const MONEY_SCALE: u32 = 8;

const PER_MILLION: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub prompt: Decimal,
    pub completion: Decimal,
}

impl ModelPrice {
    /// The cost of one request, rounded half-up to [`MONEY_SCALE`] places.
    pub fn cost(&self, prompt_tokens: u32, completion_tokens: u32) -> Decimal {
        let raw = (self.prompt * Decimal::from(prompt_tokens)
            + self.completion * Decimal::from(completion_tokens))
            / PER_MILLION;
        raw.round_dp_with_strategy(MONEY_SCALE, RoundingStrategy::MidpointAwayFromZero)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// USD per calendar month.
    pub monthly_price: Decimal,
    /// Requests included per calendar month; none means unlimited.
    #[serde(default)]
    pub monthly_quota_requests: Option<i64>,
}

/// A price looked up for a model: which entry answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriceLookup<'a> {
    pub price: &'a ModelPrice,
    /// True when the model is not in the table and the default price was used.
    pub is_default: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
    default: ModelPrice,
    #[serde(default)]
    models: BTreeMap<String, ModelPrice>,
    #[serde(default)]
    plans: BTreeMap<String, Plan>,
}

impl Pricing {
    /// Reads the table from `path`. The default relative path falls back to the built-in
    /// table when missing (a binary started outside the repository); any other missing file
    /// is an error naming it.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text)
                .map_err(|e| Error::Config(format!("worker.pricing_file {}: {e}", path.display()))),
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && path == Path::new(DEFAULT_PRICING_FILE) =>
            {
                tracing::warn!(path = %path.display(), "pricing file not found: using the built-in pricing table");
                Self::parse(DEFAULT_PRICING_TOML)
            }
            Err(e) => Err(Error::Config(format!(
                "worker.pricing_file {}: {e}",
                path.display()
            ))),
        }
    }

    /// Parses and checks a table: no negative price, every plan of the product priced, plan
    /// names known, quotas above zero.
    pub fn parse(text: &str) -> Result<Self> {
        let pricing: Pricing = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        let negative =
            |p: &ModelPrice| p.prompt.is_sign_negative() || p.completion.is_sign_negative();
        if negative(&pricing.default) {
            return Err(Error::Config("default: prices must not be negative".into()));
        }
        if let Some((name, _)) = pricing.models.iter().find(|(_, p)| negative(p)) {
            return Err(Error::Config(format!(
                "models.{name}: prices must not be negative"
            )));
        }
        for (name, plan) in &pricing.plans {
            name.parse::<PlanType>()
                .map_err(|_| Error::Config(format!("plans.{name}: unknown plan")))?;
            if plan.monthly_price.is_sign_negative() {
                return Err(Error::Config(format!(
                    "plans.{name}.monthly_price: must not be negative"
                )));
            }
            if plan.monthly_quota_requests.is_some_and(|q| q <= 0) {
                return Err(Error::Config(format!(
                    "plans.{name}.monthly_quota_requests: must be above 0"
                )));
            }
        }
        for plan in PlanType::ALL {
            if !pricing.plans.contains_key(plan.as_str()) {
                return Err(Error::Config(format!("plans.{}: missing", plan.as_str())));
            }
        }
        Ok(pricing)
    }

    /// The built-in table of `config/pricing.toml`.
    pub fn builtin() -> Result<Self> {
        Self::parse(DEFAULT_PRICING_TOML)
    }

    /// The price of `model`: an exact entry, else the longest entry that is a `-`-separated
    /// prefix of it (dated variants such as `gpt-4o-mini-2024-07-18`), else the default.
    pub fn price(&self, model: &str) -> PriceLookup<'_> {
        if let Some(price) = self.models.get(model) {
            return PriceLookup {
                price,
                is_default: false,
            };
        }
        let prefix = self
            .models
            .iter()
            .filter(|(name, _)| {
                model.len() > name.len()
                    && model.starts_with(name.as_str())
                    && model.as_bytes()[name.len()] == b'-'
            })
            .max_by_key(|(name, _)| name.len());
        match prefix {
            Some((_, price)) => PriceLookup {
                price,
                is_default: false,
            },
            None => PriceLookup {
                price: &self.default,
                is_default: true,
            },
        }
    }

    pub fn plan(&self, plan: PlanType) -> Option<&Plan> {
        self.plans.get(plan.as_str())
    }

    pub fn plans(&self) -> impl Iterator<Item = (&str, &Plan)> {
        self.plans.iter().map(|(name, plan)| (name.as_str(), plan))
    }

    pub fn models(&self) -> impl Iterator<Item = (&str, &ModelPrice)> {
        self.models
            .iter()
            .map(|(name, price)| (name.as_str(), price))
    }

    pub fn default_price(&self) -> &ModelPrice {
        &self.default
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::str::FromStr;

    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn the_shipped_table_parses() {
        let p = Pricing::builtin().unwrap();
        assert_eq!(
            p.plan(PlanType::Free).unwrap().monthly_quota_requests,
            Some(10_000)
        );
        assert_eq!(
            p.plan(PlanType::Enterprise).unwrap().monthly_quota_requests,
            None
        );
        assert!(!p.price("gpt-4o-mini").is_default);
    }

    #[test]
    fn costs_are_exact_decimals() {
        let p = Pricing::builtin().unwrap();
        // 0.15 and 0.60 USD per million tokens.
        let price = p.price("gpt-4o-mini").price;
        assert_eq!(price.cost(1_000_000, 0), d("0.15"));
        assert_eq!(price.cost(10, 20), d("0.0000135"));
        assert_eq!(price.cost(0, 0), Decimal::ZERO);
        // Rounded to 8 places: 1 token at 0.15/M is 0.00000015.
        assert_eq!(price.cost(1, 0), d("0.00000015"));
    }

    #[test]
    fn lookups_prefer_exact_then_longest_prefix_then_default() {
        let p = Pricing::builtin().unwrap();
        let cases = [
            ("gpt-4o", "2.50", false),
            ("gpt-4o-mini", "0.15", false),
            ("gpt-4o-mini-2024-07-18", "0.15", false),
            ("gpt-4o-2024-08-06", "2.50", false),
            ("gpt-4omega", "1.00", true),
            ("my-local-model", "1.00", true),
            ("", "1.00", true),
        ];
        for (model, prompt, is_default) in cases {
            let found = p.price(model);
            assert_eq!(found.price.prompt, d(prompt), "{model}");
            assert_eq!(found.is_default, is_default, "{model}");
        }
    }

    #[test]
    fn bad_tables_are_refused_with_the_entry_named() {
        let plans = r#"
            [plans.free]
            monthly_price = "0"
            [plans.starter]
            monthly_price = "1"
            [plans.pro]
            monthly_price = "2"
            [plans.enterprise]
            monthly_price = "3"
        "#;
        let cases = [
            (format!("[default]\nprompt = \"-1\"\ncompletion = \"1\"\n{plans}"), "default"),
            (format!("[default]\nprompt = \"1\"\ncompletion = \"1\"\n[models.x]\nprompt = \"-2\"\ncompletion = \"1\"\n{plans}"), "models.x"),
            ("[default]\nprompt = \"1\"\ncompletion = \"1\"\n".to_owned(), "plans.free"),
            (format!("[default]\nprompt = \"1\"\ncompletion = \"1\"\n{plans}\n[plans.gold]\nmonthly_price = \"1\"\n"), "plans.gold"),
            (format!("[default]\nprompt = \"1\"\n{plans}"), "completion"),
        ];
        for (text, named) in cases {
            let err = Pricing::parse(&text).unwrap_err().to_string();
            assert!(err.contains(named), "{named}: {err}");
        }
    }

    #[test]
    fn a_missing_non_default_file_is_an_error() {
        assert!(Pricing::load(Path::new("/nonexistent/pricing.toml")).is_err());
        assert!(Pricing::load(Path::new(DEFAULT_PRICING_FILE)).is_ok());
    }
}
