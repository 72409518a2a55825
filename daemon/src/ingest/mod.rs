//! MQTT ingest.

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddress {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// True for `mqtts://`.
    pub tls: bool,
}

impl BrokerAddress {
    /// Parses `mqtt://host:port` or `mqtts://host:port`.
    ///
    /// # Errors
    /// Returns a message naming the URL and the expected form.
    pub fn parse(url: &str) -> Result<BrokerAddress, String> {
        let invalid = || format!("invalid broker URL '{url}', expected mqtt://host:port or mqtts://host:port");
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else {
            return Err(invalid());
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| invalid())?),
            None => (rest, if tls { 8883 } else { 1883 }),
        };
        if host.is_empty() || host.contains('/') {
            return Err(invalid());
        }
        Ok(BrokerAddress { host: host.trim_matches(['[', ']']).to_owned(), port, tls })
    }
}
