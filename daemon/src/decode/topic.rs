//! Topic templates such as `meters/{region}/{meter_id}/telemetry` or `tele/{meter}/SENSOR`.
//!
//! A template is a topic whose levels are literals or placeholders:
//!
//! | level | matches | yields |
//! |---|---|---|
//! | `{region}` | one level | the region |
//! | `{meter}` or `{meter_id}` | one level | the meter id |
//! | `{name}` with any other name, or `+` | one level | nothing |
//! | `#`, last level only | the rest of the topic, possibly nothing | nothing |
//!
//! The MQTT filter to subscribe to follows from the template: every placeholder becomes `+`.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Region,
    MeterId,
    Any,
}

/// A parsed topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicLayout {
    levels: Vec<Level>,
    /// The template ends with `#`.
    rest: bool,
    text: String,
}

/// The ids a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicIds<'a> {
    /// Region level, when the template has one.
    pub region: Option<&'a str>,
    /// Meter id level, when the template has one.
    pub meter_id: Option<&'a str>,
}

/// An invalid topic template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid topic template '{layout}': {problem}")]
pub struct TopicLayoutError {
    layout: String,
    problem: &'static str,
}

impl TopicLayout {
    /// Parses a template.
    ///
    /// # Errors
    /// Returns an error for empty levels, a `#` that is not the whole last level, a `+` or a
    /// brace that is not a whole level, and a repeated `{region}` or meter placeholder.
    pub fn parse(text: &str) -> Result<Self, TopicLayoutError> {
        let fail = |problem| TopicLayoutError {
            layout: text.to_owned(),
            problem,
        };
        let parts: Vec<&str> = text.split('/').collect();
        let rest = parts.last() == Some(&"#");
        let named = if rest {
            &parts[..parts.len() - 1]
        } else {
            &parts[..]
        };
        let mut levels = Vec::with_capacity(named.len());
        for part in named {
            let level = parse_level(part).map_err(fail)?;
            if matches!(level, Level::Region | Level::MeterId) && levels.contains(&level) {
                return Err(fail("placeholder used twice"));
            }
            levels.push(level);
        }
        Ok(TopicLayout {
            levels,
            rest,
            text: text.to_owned(),
        })
    }

    /// Matches a topic and returns its ids, or `None` when the topic does not fit the template.
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
                Level::Any => {}
                Level::Region | Level::MeterId => return None,
            }
        }
        if !self.rest && parts.next().is_some() {
            return None;
        }
        Some(ids)
    }

    /// Returns the MQTT filter that matches every topic of the template.
    pub fn filter(&self) -> String {
        let mut levels: Vec<&str> = self
            .levels
            .iter()
            .map(|level| match level {
                Level::Literal(l) => l.as_str(),
                Level::Region | Level::MeterId | Level::Any => "+",
            })
            .collect();
        if self.rest {
            levels.push("#");
        }
        levels.join("/")
    }

    /// Returns the levels of `topic` that the template's trailing `#` matched, joined by `/`:
    /// `emeter/0/power` for `shellies/{meter}/#` and `shellies/em-1/emeter/0/power`.
    pub fn rest_of<'a>(&self, topic: &'a str) -> Option<&'a str> {
        if !self.rest {
            return None;
        }
        let mut rest = topic;
        for _ in &self.levels {
            rest = rest.split_once('/').map_or("", |(_, tail)| tail);
        }
        Some(rest)
    }

    /// Returns true when the template names the meter.
    pub fn has_meter(&self) -> bool {
        self.levels.contains(&Level::MeterId)
    }

    /// Returns true when the template names the region.
    pub fn has_region(&self) -> bool {
        self.levels.contains(&Level::Region)
    }
}

fn parse_level(part: &str) -> Result<Level, &'static str> {
    match part {
        "" => Err("empty level"),
        "{region}" => Ok(Level::Region),
        "{meter}" | "{meter_id}" => Ok(Level::MeterId),
        "+" => Ok(Level::Any),
        "#" => Err("'#' must be the last level"),
        p if p.len() > 2 && p.starts_with('{') && p.ends_with('}') => {
            let name = &p[1..p.len() - 1];
            if name.contains(['{', '}', '+', '#']) {
                Err("a placeholder is a whole level such as {meter}")
            } else {
                Ok(Level::Any)
            }
        }
        p if p.contains(['+', '#']) => Err("wildcards must be whole levels"),
        p if p.contains(['{', '}']) => Err("a placeholder is a whole level such as {meter}"),
        p => Ok(Level::Literal(p.to_owned())),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_their_topics() {
        let cases = [
            (
                "tele/{meter}/SENSOR",
                "tele/plug-4/SENSOR",
                None,
                Some("plug-4"),
            ),
            ("tele/{meter}/SENSOR", "tele/plug-4/STATE", None, None),
            (
                "{site}/{region}/{meter}",
                "s1/north/m-1",
                Some("north"),
                Some("m-1"),
            ),
            (
                "shellies/{meter}/#",
                "shellies/em-1/emeter/0/total",
                None,
                Some("em-1"),
            ),
            ("shellies/{meter}/#", "shellies/em-1", None, Some("em-1")),
            ("p1/+/{meter_id}", "p1/x/m-2", None, Some("m-2")),
            ("p1/+/{meter_id}", "p1/x/m-2/extra", None, None),
        ];
        for (template, topic, region, meter) in cases {
            let layout = TopicLayout::parse(template).unwrap();
            let ids = layout.match_topic(topic);
            if meter.is_none() {
                assert!(ids.is_none(), "{template} matched {topic}");
                continue;
            }
            let ids = ids.unwrap_or_else(|| panic!("{template} did not match {topic}"));
            assert_eq!((ids.region, ids.meter_id), (region, meter), "{template}");
        }
    }

    #[test]
    fn rest_is_what_the_hash_matched() {
        let layout = TopicLayout::parse("shellies/{meter}/#").unwrap();
        assert_eq!(
            layout.rest_of("shellies/em-1/emeter/0/power"),
            Some("emeter/0/power")
        );
        assert_eq!(layout.rest_of("shellies/em-1"), Some(""));
        let closed = TopicLayout::parse("tele/{meter}/SENSOR").unwrap();
        assert_eq!(closed.rest_of("tele/x/SENSOR"), None);
    }

    #[test]
    fn filters_follow_templates() {
        let cases = [
            ("tele/{meter}/SENSOR", "tele/+/SENSOR"),
            (
                "meters/{region}/{meter_id}/telemetry",
                "meters/+/+/telemetry",
            ),
            ("shellies/{meter}/#", "shellies/+/#"),
            ("{site}/+/x", "+/+/x"),
        ];
        for (template, filter) in cases {
            assert_eq!(TopicLayout::parse(template).unwrap().filter(), filter);
        }
    }

    #[test]
    fn bad_templates_name_the_problem() {
        let cases = [
            ("meters//x", "empty level"),
            ("meters/#/x", "'#' must be the last level"),
            ("meters/a+/x", "wildcards must be whole levels"),
            ("meters/{a}b/x", "a placeholder is a whole level"),
            ("meters/{region}/{region}", "placeholder used twice"),
            ("{meter}/{meter_id}", "placeholder used twice"),
        ];
        for (template, problem) in cases {
            let error = TopicLayout::parse(template).unwrap_err().to_string();
            assert!(error.contains(problem), "{template}: {error}");
            assert!(error.contains(template), "{template}: {error}");
        }
    }
}
