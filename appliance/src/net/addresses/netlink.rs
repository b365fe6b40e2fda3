//! The applier: reads the host's interfaces and adds and removes
//! poolgate's addresses over rtnetlink (needs `CAP_NET_ADMIN`).
//!
//! Invariants:
//! * Addresses go on as host addresses (/32, /128), so they add no subnet
//!   route and never become an IPv4 "secondary" that the kernel deletes
//!   with the primary; IPv6 ones with `IFA_F_NODAD`, so a service can bind
//!   at once.
//! * Each carries the address protocol mark [`PROTO`] (`IFA_PROTO`), which
//!   is how a restarted poolgate recognises, and removes, addresses it left
//!   behind; addresses without it are the administrator's and are never
//!   touched. The addresses added by this process count as ours too, for
//!   kernels that do not report the mark.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

use futures_util::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressMessage, AddressProtocol,
};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::Handle;

use super::desired::{HostAddress, HostInterface};

/// The `IFA_PROTO` value poolgate's addresses carry (`ip address` shows it
/// as `proto 80`); the kernel's own are 1 to 3.
pub(crate) const PROTO: u8 = 80;

/// Why reading or changing the host's addresses failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Open(#[source] io::Error),
    #[error("netlink: {0}")]
    Request(#[from] rtnetlink::Error),
}

impl NetlinkError {
    /// The errno of a refused request (`EPERM` without `CAP_NET_ADMIN`).
    pub(crate) fn errno(&self) -> Option<i32> {
        match self {
            Self::Request(rtnetlink::Error::NetlinkError(message)) => {
                message.code.map(|code| code.get().abs())
            }
            _ => None,
        }
    }
}

/// A netlink connection to the kernel's routing tables.
#[derive(Debug)]
pub(crate) struct Netlink {
    handle: Handle,
    /// Added by this process: (interface index, address).
    added: BTreeSet<(u32, IpAddr)>,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Netlink {
    /// Open a connection; its driver runs as a task until this is dropped.
    pub(crate) fn open() -> Result<Self, NetlinkError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Open)?;
        Ok(Self {
            handle,
            added: BTreeSet::new(),
            connection: tokio::spawn(connection),
        })
    }

    /// Every interface with its addresses, marking poolgate's.
    pub(crate) async fn interfaces(&self) -> Result<Vec<HostInterface>, NetlinkError> {
        let links: Vec<LinkMessage> = self.handle.link().get().execute().try_collect().await?;
        let mut interfaces: Vec<HostInterface> = links
            .iter()
            .filter_map(|link| {
                let mut name = None;
                let mut mac = None;
                for attribute in &link.attributes {
                    match attribute {
                        LinkAttribute::IfName(n) => name = Some(n.clone()),
                        LinkAttribute::Address(bytes) => mac = <[u8; 6]>::try_from(&bytes[..]).ok(),
                        _ => {}
                    }
                }
                Some(HostInterface {
                    name: name?,
                    index: link.header.index,
                    mac,
                    addresses: Vec::new(),
                })
            })
            .collect();
        let addresses: Vec<AddressMessage> =
            self.handle.address().get().execute().try_collect().await?;
        for message in &addresses {
            let Some(ip) = address_of(message) else {
                continue;
            };
            let index = message.header.index;
            let marked = message
                .attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Protocol(AddressProtocol::Other(p)) if *p == PROTO));
            if let Some(interface) = interfaces.iter_mut().find(|i| i.index == index) {
                interface.addresses.push(HostAddress {
                    ip,
                    prefix_len: message.header.prefix_len,
                    ours: marked || self.added.contains(&(index, ip)),
                });
            }
        }
        Ok(interfaces)
    }

    /// Add `ip` to `interface` as a host address with poolgate's mark. An
    /// address that is there already is no error.
    pub(crate) async fn add(
        &mut self,
        interface: &HostInterface,
        ip: IpAddr,
    ) -> Result<(), NetlinkError> {
        let prefix_len = if ip.is_ipv4() { 32 } else { 128 };
        let mut request = self.handle.address().add(interface.index, ip, prefix_len);
        let message = request.message_mut();
        message
            .attributes
            .push(AddressAttribute::Protocol(AddressProtocol::Other(PROTO)));
        if ip.is_ipv6() {
            message
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match request.execute().await {
            Ok(()) => {
                self.added.insert((interface.index, ip));
                Ok(())
            }
            Err(error) => {
                let error = NetlinkError::from(error);
                // Someone else put it there between the read and the add:
                // theirs, never to be removed; the next pass reads it back.
                if error.errno() == Some(nix::errno::Errno::EEXIST as i32) {
                    Ok(())
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Remove `ip` from `interface`. An address already gone is no error.
    pub(crate) async fn remove(
        &mut self,
        interface: &HostInterface,
        ip: IpAddr,
    ) -> Result<(), NetlinkError> {
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(interface.index)
            .set_address_filter(ip)
            .execute()
            .try_collect()
            .await?;
        for message in messages {
            if let Err(error) = self.handle.address().del(message).execute().await {
                let error = NetlinkError::from(error);
                if error.errno() != Some(nix::errno::Errno::EADDRNOTAVAIL as i32) {
                    return Err(error);
                }
            }
        }
        self.added.remove(&(interface.index, ip));
        Ok(())
    }
}

/// The local address of an address message (`IFA_LOCAL` for IPv4, where
/// `IFA_ADDRESS` is the peer on point-to-point links; `IFA_ADDRESS` for
/// IPv6).
fn address_of(message: &AddressMessage) -> Option<IpAddr> {
    let mut local = None;
    let mut address = None;
    for attribute in &message.attributes {
        match attribute {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    match message.header.family {
        AddressFamily::Inet => local.or(address),
        _ => address.or(local),
    }
}
