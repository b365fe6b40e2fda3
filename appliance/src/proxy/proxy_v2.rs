//! The PROXY protocol version 2 header (HAProxy's `proxy-protocol.txt`,
//! section 2.2) a virtual service with `send_proxy = "v2"` sends each member
//! before the client's first byte, so the member sees who the client is.
//!
//! Only what a TCP proxy needs is written: command PROXY, family TCP over
//! IPv4 or IPv6, the client's address and port as the source and the
//! address and port it connected to (the VIP) as the destination, no TLVs.
//! Both addresses IPv4 gives `TCP4`; otherwise `TCP6`, an IPv4 address
//! written as `::ffff:a.b.c.d`. An IPv4-mapped IPv6 address (a client of a
//! dual-stack listener) counts as the IPv4 address it maps. Pure.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The twelve bytes every v2 header starts with.
const SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// Version 2 (high nibble), command PROXY (low nibble).
const VERSION_PROXY: u8 = 0x21;
/// Address family (high nibble) and transport STREAM (low nibble).
const TCP4: u8 = 0x11;
const TCP6: u8 = 0x21;
/// Signature, version/command, family, length: 16 bytes, then addresses.
const FIXED: usize = 16;
/// The longest header written: TCP6 addresses are 2 × 16 + 2 × 2 bytes.
pub(super) const MAX_LEN: usize = FIXED + 36;

/// One header, on the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    bytes: [u8; MAX_LEN],
    len: usize,
}

impl Header {
    /// The header for a TCP connection from `client` to `local`.
    pub(super) fn new(client: SocketAddr, local: SocketAddr) -> Self {
        let mut bytes = [0u8; MAX_LEN];
        bytes[..12].copy_from_slice(&SIGNATURE);
        bytes[12] = VERSION_PROXY;
        let (src, dst) = (client.ip().to_canonical(), local.ip().to_canonical());
        let addresses = match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                bytes[13] = TCP4;
                bytes[FIXED..FIXED + 4].copy_from_slice(&src.octets());
                bytes[FIXED + 4..FIXED + 8].copy_from_slice(&dst.octets());
                8
            }
            (src, dst) => {
                bytes[13] = TCP6;
                bytes[FIXED..FIXED + 16].copy_from_slice(&v6(src).octets());
                bytes[FIXED + 16..FIXED + 32].copy_from_slice(&v6(dst).octets());
                32
            }
        };
        let ports = FIXED + addresses;
        bytes[ports..ports + 2].copy_from_slice(&client.port().to_be_bytes());
        bytes[ports + 2..ports + 4].copy_from_slice(&local.port().to_be_bytes());
        let len = ports + 4;
        let body = u16::try_from(len - FIXED).expect("at most 36 address bytes");
        bytes[14..16].copy_from_slice(&body.to_be_bytes());
        Self { bytes, len }
    }

    pub(super) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

    #[test]
    fn signature_is_the_specs() {
        assert_eq!(SIGNATURE, SIG);
    }

    #[test]
    fn ipv4_client_gives_tcp4() {
        let header = Header::new(
            "192.0.2.7:51000".parse().expect("addr"),
            "198.51.100.1:443".parse().expect("addr"),
        );
        let mut want = SIG.to_vec();
        want.extend([0x21, 0x11, 0x00, 0x0C]);
        want.extend([192, 0, 2, 7, 198, 51, 100, 1]);
        want.extend(51000u16.to_be_bytes());
        want.extend([0x01, 0xBB]);
        assert_eq!(header.as_bytes(), want);
        assert_eq!(header.as_bytes().len(), 28);
    }

    #[test]
    fn ipv6_client_gives_tcp6() {
        let header = Header::new(
            "[2001:db8::7]:51000".parse().expect("addr"),
            "[2001:db8::1]:443".parse().expect("addr"),
        );
        let mut want = SIG.to_vec();
        want.extend([0x21, 0x21, 0x00, 0x24]);
        want.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
        want.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend([0xC7, 0x38, 0x01, 0xBB]);
        assert_eq!(header.as_bytes(), want);
        assert_eq!(header.as_bytes().len(), MAX_LEN);
    }

    #[test]
    fn mixed_families_map_ipv4_into_tcp6() {
        let header = Header::new(
            "192.0.2.7:1".parse().expect("addr"),
            "[2001:db8::1]:2".parse().expect("addr"),
        );
        let bytes = header.as_bytes();
        assert_eq!(bytes[13], 0x21);
        assert_eq!(
            &bytes[16..32],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 7]
        );
        assert_eq!(&bytes[48..52], &[0, 1, 0, 2]);
    }

    #[test]
    fn ipv4_mapped_addresses_count_as_ipv4() {
        let header = Header::new(
            "[::ffff:192.0.2.7]:1".parse().expect("addr"),
            "[::ffff:198.51.100.1]:2".parse().expect("addr"),
        );
        assert_eq!(header.as_bytes()[13], 0x11);
        assert_eq!(&header.as_bytes()[16..24], &[192, 0, 2, 7, 198, 51, 100, 1]);
    }
}
