//! The five fine-tuning methods the demo compares, by name.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Method {
    Sft,
    Pearl,
    PearlNoNextLat,
    Lvr,
    /// The tool-calling baseline: evaluated as an agent that executes its crop calls.
    ToolCall,
}

impl Method {
    pub const ALL: [Method; 5] = [
        Method::Sft,
        Method::Pearl,
        Method::PearlNoNextLat,
        Method::Lvr,
        Method::ToolCall,
    ];

    /// Directory-safe name.
    pub fn slug(self) -> &'static str {
        match self {
            Method::Sft => "sft",
            Method::Pearl => "pearl",
            Method::PearlNoNextLat => "pearl-no-nextlat",
            Method::Lvr => "lvr",
            Method::ToolCall => "toolcall",
        }
    }

    /// Name in tables and figures.
    pub fn label(self) -> &'static str {
        match self {
            Method::Sft => "SFT",
            Method::Pearl => "Pearl",
            Method::PearlNoNextLat => "Pearl w/o NextLat",
            Method::Lvr => "LVR",
            Method::ToolCall => "Tool calling (fine-tuned agent)",
        }
    }
}
