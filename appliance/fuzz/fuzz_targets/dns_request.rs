//! The whole DNS request path, bytes in → bytes out, over UDP and TCP rules,
//! against the loopback example pool. It must never panic, and every reply
//! must itself parse and respect the UDP size limit, and its slipped form
//! (what the response-rate limiter sends) must parse too.

#![no_main]

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use libfuzzer_sys::fuzz_target;
use poolgate::config;
use poolgate::dns::rrl;
use poolgate::dns::wire::{self, Outcome, Transport};
use poolgate::state::{Inputs, PoolView};
use rand::SeedableRng;
use rand::rngs::SmallRng;

static VIEW: LazyLock<PoolView> = LazyLock::new(|| {
    let text = include_str!("../../../examples/lync-pool.toml");
    let config = config::from_toml(text, "lync-pool.toml").expect("the example is valid");
    PoolView::build(&Inputs::new(Arc::new(config), 1, BTreeMap::new()), 1)
});

fuzz_target!(|data: &[u8]| {
    let mut rng = SmallRng::seed_from_u64(0);
    for transport in [Transport::Udp, Transport::Tcp] {
        if let Outcome::Reply { bytes, .. } = wire::respond(data, &VIEW, transport, &mut rng) {
            if transport == Transport::Udp {
                assert!(bytes.len() <= usize::from(wire::MAX_UDP_PAYLOAD));
            }
            assert!(bytes.len() >= 12, "a reply has at least a header");
            // Any reply can be slipped by the response-rate limiter: the
            // result is a shorter message with TC set that still parses.
            let cut = rrl::slipped(&bytes).expect("a reply of ours can be slipped");
            assert!(cut.len() <= bytes.len());
            let parsed =
                hickory_proto::op::Message::from_vec(&cut).expect("a slipped reply parses");
            assert!(parsed.metadata.truncation);
        }
    }
});
