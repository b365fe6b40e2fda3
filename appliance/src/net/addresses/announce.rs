//! Telling the link that an address has arrived: a gratuitous ARP request
//! for IPv4 and an unsolicited neighbour advertisement (override set, to
//! all nodes) for IPv6, so neighbours that knew the address at another MAC
//! (the HA peer, a replaced appliance) update at once. Needs `CAP_NET_RAW`.
//!
//! The frames are built by pure functions (tested below); sending is
//! blocking and short, run it off the async workers.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV6};

/// A gratuitous ARP request: sender and target are `ip`, sent to broadcast.
pub(crate) fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut frame = [0u8; 42];
    frame[0..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&mac);
    frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    // Ethernet, IPv4, address lengths 6 and 4, request.
    frame[14..22].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    frame[22..28].copy_from_slice(&mac);
    frame[28..32].copy_from_slice(&ip.octets());
    // Target hardware address stays zero.
    frame[38..42].copy_from_slice(&ip.octets());
    frame
}

/// An unsolicited neighbour advertisement for `ip` with the target
/// link-layer address option; the kernel fills in the checksum.
pub(crate) fn na_message(mac: [u8; 6], ip: Ipv6Addr) -> [u8; 32] {
    let mut message = [0u8; 32];
    message[0] = 136; // Neighbor Advertisement, code 0
    message[4] = 0x20; // Override; neither Router nor Solicited
    message[8..24].copy_from_slice(&ip.octets());
    message[24] = 2; // Target Link-Layer Address, 8 bytes
    message[25] = 1;
    message[26..32].copy_from_slice(&mac);
    message
}

/// Send a gratuitous ARP for `ip` out of interface `index` (`name`).
pub(crate) fn send_garp(name: &str, index: u32, mac: [u8; 6], ip: Ipv4Addr) -> io::Result<()> {
    let interface = pnet_datalink::NetworkInterface {
        name: name.to_owned(),
        description: String::new(),
        index,
        mac: Some(pnet_datalink::MacAddr::from(mac)),
        ips: Vec::new(),
        flags: 0,
    };
    let config = pnet_datalink::Config {
        promiscuous: false,
        write_timeout: Some(std::time::Duration::from_secs(1)),
        read_timeout: Some(std::time::Duration::from_millis(1)),
        ..pnet_datalink::Config::default()
    };
    let (mut tx, _rx) = match pnet_datalink::channel(&interface, config)? {
        pnet_datalink::Channel::Ethernet(tx, rx) => (tx, rx),
        _ => return Err(io::Error::other("not an Ethernet channel")),
    };
    tx.send_to(&garp_frame(mac, ip), None)
        .unwrap_or_else(|| Err(io::Error::other("the frame was not sent")))
}

/// Send an unsolicited neighbour advertisement for `ip` (which must be on
/// the interface already) to all nodes on interface `index`.
pub(crate) fn send_na(index: u32, mac: [u8; 6], ip: Ipv6Addr) -> io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    // Receivers drop neighbour discovery that crossed a router.
    socket.set_multicast_hops_v6(255)?;
    socket.set_unicast_hops_v6(255)?;
    socket.set_multicast_if_v6(index)?;
    socket.bind(&SocketAddrV6::new(ip, 0, 0, 0).into())?;
    let all_nodes = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 0, 0, index);
    socket.send_to(&na_message(mac, ip), &all_nodes.into())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    #[test]
    fn garp_names_the_address_as_sender_and_target() {
        let frame = garp_frame(MAC, Ipv4Addr::new(198, 51, 100, 20));
        assert_eq!(&frame[0..6], &[0xff; 6]);
        assert_eq!(&frame[6..12], &MAC);
        assert_eq!(&frame[12..14], &[0x08, 0x06]);
        assert_eq!(&frame[20..22], &[0, 1], "an ARP request");
        assert_eq!(&frame[22..28], &MAC);
        assert_eq!(&frame[28..32], &[198, 51, 100, 20]);
        assert_eq!(&frame[32..38], &[0; 6]);
        assert_eq!(&frame[38..42], &[198, 51, 100, 20]);
    }

    #[test]
    fn na_overrides_and_carries_the_mac() {
        let ip: Ipv6Addr = "2001:db8:100::20".parse().expect("test address");
        let message = na_message(MAC, ip);
        assert_eq!(message[0], 136);
        assert_eq!(message[1], 0);
        assert_eq!(message[4] & 0xe0, 0x20, "override only");
        assert_eq!(&message[8..24], &ip.octets());
        assert_eq!(&message[24..26], &[2, 1]);
        assert_eq!(&message[26..32], &MAC);
    }
}
