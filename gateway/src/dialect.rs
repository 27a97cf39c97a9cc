//! The two wire formats the gateway speaks, on either side: OpenAI's Chat Completions and
//! Anthropic's Messages.

use wrapx_core::types::ProviderKind;

/// Which wire format a client or a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderDialect {
    OpenAiChat,
    AnthropicMessages,
}

impl ProviderDialect {
    pub fn of(kind: ProviderKind) -> Self {
        if kind.speaks_anthropic() {
            Self::AnthropicMessages
        } else {
            Self::OpenAiChat
        }
    }
}
