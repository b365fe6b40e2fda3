//! What a TLS client sent as its server name (SNI, RFC 6066 §3), read from
//! the raw bytes of its first TLS record. rustls ignores an IP address or
//! a malformed name there (and would log a WARN line per connection, which
//! lets anyone flood the log); the accept layer instead counts such names
//! and logs them at debug. Pure: bytes in, a classification out.

/// The server name of a ClientHello, as far as the first record shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sni {
    /// No server name extension: normal for clients that connect by address.
    Absent,
    /// A DNS host name.
    HostName(String),
    /// An IP address, which RFC 6066 forbids as a server name.
    IpAddress(String),
    /// Not a host name (bad characters, empty labels, too long).
    Invalid(String),
    /// Not a complete ClientHello in one record: nothing to say.
    Unknown,
}

impl Sni {
    /// An IP address or a malformed name.
    pub(crate) fn is_illegal(&self) -> bool {
        matches!(self, Self::IpAddress(_) | Self::Invalid(_))
    }
}

/// Largest TLS record, plus its header.
pub(crate) const MAX_RECORD: usize = 5 + 16_384;

/// How many bytes of the stream hold its first record: `None` until the
/// record header has arrived.
pub(crate) fn first_record_len(bytes: &[u8]) -> Option<usize> {
    let header = bytes.get(..5)?;
    Some((5 + usize::from(u16::from_be_bytes([header[3], header[4]]))).min(MAX_RECORD))
}

/// Classify the server name of the ClientHello in `record` (the first TLS
/// record of a connection, header included).
pub(crate) fn classify(record: &[u8]) -> Sni {
    parse(record).unwrap_or(Sni::Unknown)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn parse(record: &[u8]) -> Option<Sni> {
    let mut r = Reader(record);
    // Record: handshake (22), version, length.
    if r.u8()? != 22 {
        return None;
    }
    r.take(2)?;
    let mut body = Reader(r.vec16()?);
    // Handshake: client_hello (1), 24-bit length.
    if body.u8()? != 1 {
        return None;
    }
    let length = body.take(3)?;
    let length =
        usize::from(length[0]) << 16 | usize::from(length[1]) << 8 | usize::from(length[2]);
    let mut hello = Reader(body.take(length)?);
    hello.take(2 + 32)?; // legacy_version, random
    hello.vec8()?; // legacy_session_id
    hello.vec16()?; // cipher_suites
    hello.vec8()?; // legacy_compression_methods
    if hello.0.is_empty() {
        return Some(Sni::Absent);
    }
    let mut extensions = Reader(hello.vec16()?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec16()?;
        if kind != 0 {
            continue;
        }
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 {
                return Some(name_kind(name));
            }
        }
        return Some(Sni::Absent);
    }
    Some(Sni::Absent)
}

fn name_kind(name: &[u8]) -> Sni {
    let text = String::from_utf8_lossy(name).into_owned();
    let Ok(as_str) = std::str::from_utf8(name) else {
        return Sni::Invalid(text);
    };
    if as_str.parse::<std::net::IpAddr>().is_ok()
        || as_str
            .trim_end_matches('.')
            .parse::<std::net::Ipv4Addr>()
            .is_ok()
    {
        return Sni::IpAddress(text);
    }
    match rustls_pki_types::DnsName::try_from(as_str) {
        Ok(_) => Sni::HostName(text),
        Err(_) => Sni::Invalid(text),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal ClientHello record carrying `name` as its server name (or
    /// no server name extension).
    pub(crate) fn client_hello(name: Option<&[u8]>) -> Vec<u8> {
        let mut extensions = Vec::new();
        // supported_versions: TLS 1.3, so it is a plausible hello.
        extensions.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
        if let Some(name) = name {
            let n = name.len() as u16;
            extensions.extend_from_slice(&[0x00, 0x00]);
            extensions.extend_from_slice(&(n + 5).to_be_bytes());
            extensions.extend_from_slice(&(n + 3).to_be_bytes());
            extensions.push(0);
            extensions.extend_from_slice(&n.to_be_bytes());
            extensions.extend_from_slice(name);
        }
        let mut hello = vec![0x03, 0x03];
        hello.extend_from_slice(&[7; 32]);
        hello.push(0);
        hello.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]);
        hello.extend_from_slice(&[0x01, 0x00]);
        hello.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        hello.extend_from_slice(&extensions);
        let mut handshake = vec![1, 0];
        handshake.extend_from_slice(&(hello.len() as u16).to_be_bytes());
        handshake.extend_from_slice(&hello);
        let mut record = vec![22, 3, 1];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    #[test]
    fn names_addresses_and_garbage_are_told_apart() {
        let sni = |name: Option<&[u8]>| classify(&client_hello(name));
        assert_eq!(
            sni(Some(b"pool.contoso.test")),
            Sni::HostName("pool.contoso.test".into())
        );
        assert_eq!(sni(Some(b"127.0.0.1")), Sni::IpAddress("127.0.0.1".into()));
        assert_eq!(sni(Some(b"::1")), Sni::IpAddress("::1".into()));
        assert!(sni(Some(b"bad name!")).is_illegal());
        assert!(sni(Some(b"\xff\xfe")).is_illegal());
        assert_eq!(sni(None), Sni::Absent);
        assert!(!sni(Some(b"pool.contoso.test")).is_illegal());
    }

    #[test]
    fn partial_or_foreign_bytes_say_nothing() {
        let record = client_hello(Some(b"127.0.0.1"));
        for cut in 0..record.len() {
            assert_eq!(classify(&record[..cut]), Sni::Unknown, "cut at {cut}");
        }
        assert_eq!(classify(b"GET / HTTP/1.1\r\n\r\n"), Sni::Unknown);
        assert_eq!(first_record_len(&record), Some(record.len()));
        assert_eq!(first_record_len(&record[..4]), None);
    }
}
