//! Topic layouts such as `meters/{region}/{meter_id}/telemetry`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Region,
    MeterId,
}

/// A topic layout: literal levels plus the `{region}` and `{meter_id}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLayout {
    levels: Vec<Level>,
    text: String,
}

/// The ids a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicIds<'a> {
    /// Region level, when the layout has one.
    pub region: Option<&'a str>,
    /// Meter id level, when the layout has one.
    pub meter_id: Option<&'a str>,
}

/// An invalid topic layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic layout '{layout}': {problem}")]
pub struct TopicLayoutError {
    layout: String,
    problem: &'static str,
}

impl TopicLayout {
    /// Parses a layout.
    ///
    /// # Errors
    /// Returns an error for wildcards, empty levels, unknown or repeated placeholders.
    pub fn parse(text: &str) -> Result<Self, TopicLayoutError> {
        let fail = |problem| TopicLayoutError {
            layout: text.to_owned(),
            problem,
        };
        let mut levels = Vec::new();
        for level in text.split('/') {
            let parsed = match level {
                "{region}" => Level::Region,
                "{meter_id}" => Level::MeterId,
                "" => return Err(fail("empty level")),
                l if l.contains(['+', '#']) => return Err(fail("wildcards belong in mqtt.topics")),
                l if l.contains(['{', '}']) => {
                    return Err(fail("unknown placeholder, expected {region} or {meter_id}"));
                }
                l => Level::Literal(l.to_owned()),
            };
            if parsed != Level::Literal(String::new())
                && !matches!(parsed, Level::Literal(_))
                && levels.contains(&parsed)
            {
                return Err(fail("placeholder used twice"));
            }
            levels.push(parsed);
        }
        Ok(TopicLayout {
            levels,
            text: text.to_owned(),
        })
    }

    /// Matches a topic and returns its ids, or `None` when the topic does not fit the layout.
    pub fn match_topic<'a>(&self, topic: &'a str) -> Option<TopicIds<'a>> {
        let mut ids = TopicIds {
            region: None,
            meter_id: None,
        };
        let mut parts = topic.split('/');
        for level in &self.levels {
            let part = parts.next()?;
            match level {
                Level::Literal(l) if l == part => {}
                Level::Literal(_) => return None,
                Level::Region if valid_id(part) => ids.region = Some(part),
                Level::MeterId if valid_id(part) => ids.meter_id = Some(part),
                Level::Region | Level::MeterId => return None,
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(ids)
    }
}

fn valid_id(part: &str) -> bool {
    !part.is_empty() && part.len() <= super::MAX_ID_BYTES
}

impl fmt::Display for TopicLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
