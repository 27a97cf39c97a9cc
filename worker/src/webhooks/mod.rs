//! Webhooks: [`fanout`] turns each event into one delivery per subscribed webhook, [`deliver`]
//! sends them signed ([`sign`]) to addresses the SSRF policy allows ([`ssrf`]), with retries
//! through the RabbitMQ delay tiers.

pub mod deliver;
pub mod fanout;
pub mod sign;
pub mod ssrf;
