//! The UDP engine DNS and SIP share: datagrams received and answered in
//! batches (`recvmmsg`/`sendmmsg`, two system calls per batch instead of two
//! per datagram), by up to one worker per core (`udp_workers`) on one
//! socket, of which only the first waits on the socket's readiness.
//!
//! One socket rather than one per worker (`SO_REUSEPORT`): the kernel
//! spreads reuse-port sockets by source address and port, so a few busy
//! resolvers or proxies would land on one worker. The other workers are
//! helpers that wait to be called: a worker whose receive came back full
//! (more is queued) calls one, which drains the socket in turn and calls
//! the next if its batch is full too. Every worker waiting on the socket's
//! readiness woke for every datagram and took a share of the batch, which
//! cost each datagram more CPU: with two on two cores shared with dnsperf,
//! 0.88x NSD against 1.32x with one (decision 1203).
//!
//! Bounded by construction: a worker answers each batch (a fixed set of
//! buffers) before reading the next, so a flood costs only the kernel's
//! socket buffer, where the excess is dropped.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, PoisonError};

use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::dns::rrl::{self, Limiter, Verdict};

/// Datagrams received (and answered) per batch.
const BATCH: usize = 64;
/// Batches taken back to back before waiting on readiness again: the bound
/// keeps shutdown prompt and lets other tasks on the runtime run.
const DRAIN_BATCHES: usize = 8;

/// One datagram received: its bytes (cut to the buffer size by the
/// kernel) and its sender.
#[derive(Debug)]
pub(crate) struct Datagram<'a> {
    pub bytes: &'a [u8],
    pub peer: SocketAddr,
}

/// What a UDP service makes of its datagrams; one per worker.
pub(crate) trait Answerer: Send + 'static {
    /// Answer one batch, in order: each reply is pushed to `replies` with
    /// the address it goes to.
    fn answer(&mut self, batch: &[Datagram<'_>], replies: &mut Vec<(Vec<u8>, SocketAddr)>);

    /// A datagram arrived without a sender address one can answer.
    fn unaddressed(&mut self);

    /// A reply could not be sent.
    fn send_failed(&mut self, peer: SocketAddr, error: &std::io::Error);
}

/// The rate limiter's verdict on each datagram of `batch`, in order, with
/// the limiter (shared by a service's workers) locked once for the batch
/// and set to `limits` first (they follow the config).
pub(crate) fn verdicts(
    limiter: &Mutex<Limiter>,
    limits: rrl::Limits,
    batch: &[Datagram<'_>],
) -> Vec<Verdict> {
    let mut limiter = limiter.lock().unwrap_or_else(PoisonError::into_inner);
    limiter.set_limits(limits);
    let now = std::time::Instant::now();
    batch
        .iter()
        .map(|datagram| limiter.check(datagram.peer.ip(), now))
        .collect()
}

/// Serve `socket` until `shutdown` with `workers` workers (at least one;
/// `udp_workers()` is one per core), each with its own answerer
/// (`answerer(index)`; the first is the one that waits on the socket) and
/// `BATCH` buffers of `buffer` bytes.
pub(crate) async fn serve<A: Answerer>(
    socket: UdpSocket,
    workers: usize,
    buffer: usize,
    mut answerer: impl FnMut(usize) -> A,
    shutdown: CancellationToken,
) {
    let socket = Arc::new(socket);
    let help = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..workers.max(1) {
        let wait = if index == 0 {
            Wait::Readable
        } else {
            Wait::Called
        };
        let crew = Crew {
            wait,
            help: Arc::clone(&help),
        };
        tasks.spawn(worker(
            Arc::clone(&socket),
            crew,
            buffer,
            answerer(index),
            shutdown.clone(),
        ));
    }
    while tasks.join_next().await.is_some() {}
}

/// What a worker waits on before it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// The socket's readiness (the first worker).
    Readable,
    /// A call for help from a worker whose batch came back full.
    Called,
}

/// A worker's place among the workers of its socket.
#[derive(Debug)]
struct Crew {
    wait: Wait,
    /// Where a full batch calls a helper.
    help: Arc<Notify>,
}

async fn worker<A: Answerer>(
    socket: Arc<UdpSocket>,
    crew: Crew,
    buffer: usize,
    mut answerer: A,
    shutdown: CancellationToken,
) {
    let fd = socket.as_raw_fd();
    // Each buffer zeroed by the allocator, not copied from a first one: a
    // page holds memory only once a datagram was written to it.
    let mut buffers: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; buffer]).collect();
    let mut replies = Vec::with_capacity(BATCH);
    let mut batches_left = 0;
    loop {
        // Under load, drain several batches before waiting on readiness
        // (and shutdown) again.
        if batches_left == 0 {
            let turn = async {
                match crew.wait {
                    Wait::Readable => socket.readable().await,
                    Wait::Called => {
                        crew.help.notified().await;
                        Ok(())
                    }
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                ready = turn => if let Err(error) = ready {
                    tracing::debug!(%error, "UDP socket not readable");
                    continue;
                },
            }
            batches_left = DRAIN_BATCHES;
        }
        batches_left -= 1;
        // The headers hold raw pointers (not `Send`), so they live only
        // inside the synchronous system-call closures.
        // A batch that came back short took everything queued: it is
        // reported to `try_io` as `WouldBlock` (and kept in `drained`) so
        // that the socket's readiness is cleared with it, and the worker
        // waits for the next datagram instead of a receive finding nothing.
        let mut drained = None;
        let received = socket.try_io(Interest::READABLE, || {
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers
                .iter_mut()
                .map(|buffer| [IoSliceMut::new(buffer)])
                .collect();
            let results = recvmmsg(
                fd,
                &mut headers,
                slices.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(std::io::Error::from)?;
            let received: Vec<_> = results
                .map(|message| (message.bytes, message.address))
                .collect();
            if received.len() < BATCH {
                drained = Some(received);
                return Err(std::io::ErrorKind::WouldBlock.into());
            }
            Ok(received)
        });
        let received = match (received, drained) {
            (_, Some(received)) => {
                batches_left = 0;
                received
            }
            (Ok(received), None) => received,
            (Err(error), None) => {
                // Nothing queued; or an ICMP error from an earlier send,
                // which Linux reports here: it concerns one peer, never the
                // socket.
                if error.kind() != std::io::ErrorKind::WouldBlock {
                    tracing::debug!(%error, "UDP receive failed");
                }
                batches_left = 0;
                continue;
            }
        };
        if received.len() == BATCH {
            crew.help.notify_one();
            // The helper was woken from this thread, so tokio keeps it in
            // this thread's next-task slot, which no other thread steals
            // from: it would wait for this worker to finish. Yielding lets it
            // run here and this worker be taken by an idle thread.
            tokio::task::yield_now().await;
        }
        let mut batch = Vec::with_capacity(received.len());
        for (buffer, (length, address)) in buffers.iter().zip(received) {
            match address.as_ref().and_then(socket_addr) {
                Some(peer) => batch.push(Datagram {
                    bytes: &buffer[..length.min(buffer.len())],
                    peer,
                }),
                None => answerer.unaddressed(),
            }
        }
        answerer.answer(&batch, &mut replies);
        drop(batch);
        let sent = if replies.is_empty() {
            0
        } else {
            send_batch(&socket, &replies)
        };
        // Whatever the batch send did not take (a full socket buffer, one
        // unreachable peer) goes out one by one.
        for (bytes, peer) in replies.iter().skip(sent) {
            if let Err(error) = socket.send_to(bytes, peer).await {
                answerer.send_failed(*peer, &error);
            }
        }
        replies.clear();
    }
}

/// Send `replies` in one `sendmmsg`; how many the kernel took.
fn send_batch(socket: &UdpSocket, replies: &[(Vec<u8>, SocketAddr)]) -> usize {
    let slices: Vec<[IoSlice<'_>; 1]> = replies
        .iter()
        .map(|(bytes, _)| [IoSlice::new(bytes)])
        .collect();
    let addresses: Vec<Option<SockaddrStorage>> = replies
        .iter()
        .map(|(_, peer)| Some(SockaddrStorage::from(*peer)))
        .collect();
    let no_control: [ControlMessage<'_>; 0] = [];
    socket
        .try_io(Interest::WRITABLE, || {
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(replies.len(), None);
            sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                &slices,
                &addresses,
                no_control,
                MsgFlags::MSG_DONTWAIT,
            )
            .map(Iterator::count)
            .map_err(std::io::Error::from)
        })
        .unwrap_or(0)
}

fn socket_addr(storage: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    storage
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    /// Echoes each datagram and counts, per worker, what it answered.
    struct Echo {
        index: usize,
        answered: Arc<Mutex<Vec<usize>>>,
        slow_first: bool,
    }

    impl Answerer for Echo {
        fn answer(&mut self, batch: &[Datagram<'_>], replies: &mut Vec<(Vec<u8>, SocketAddr)>) {
            if batch.len() == BATCH && std::mem::take(&mut self.slow_first) {
                std::thread::sleep(Duration::from_millis(300));
            }
            self.answered.lock().expect("not poisoned")[self.index] += batch.len();
            replies.extend(batch.iter().map(|d| (d.bytes.to_vec(), d.peer)));
        }
        fn unaddressed(&mut self) {}
        fn send_failed(&mut self, _: SocketAddr, _: &std::io::Error) {}
    }

    /// Serve `socket` with two workers; with `slow_first`, the first
    /// worker's first full batch takes 300 ms.
    fn start(socket: UdpSocket, slow_first: bool) -> (Arc<Mutex<Vec<usize>>>, CancellationToken) {
        let answered = Arc::new(Mutex::new(vec![0; 2]));
        let shutdown = CancellationToken::new();
        let counts = Arc::clone(&answered);
        let answerer = move |index| Echo {
            index,
            answered: Arc::clone(&counts),
            slow_first: slow_first && index == 0,
        };
        tokio::spawn(serve(socket, 2, 512, answerer, shutdown.clone()));
        (answered, shutdown)
    }

    async fn pair() -> (UdpSocket, UdpSocket) {
        let server = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        client
            .connect(server.local_addr().expect("address"))
            .await
            .expect("connect");
        (server, client)
    }

    async fn receive(client: &UdpSocket, count: usize) -> Vec<u16> {
        let mut seen = Vec::new();
        let mut buffer = [0u8; 16];
        for _ in 0..count {
            let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buffer))
                .await
                .expect("every datagram is answered")
                .expect("receive");
            seen.push(u16::from_be_bytes([buffer[0], buffer[1]]));
            assert_eq!(n, 2);
        }
        seen.sort_unstable();
        seen
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_worker_answers_datagrams_that_come_one_at_a_time() {
        let (server, client) = pair().await;
        let (answered, shutdown) = start(server, false);
        for i in 0..50u16 {
            client.send(&i.to_be_bytes()).await.expect("send");
            assert_eq!(receive(&client, 1).await, [i]);
        }
        assert_eq!(*answered.lock().expect("not poisoned"), [50, 0]);
        shutdown.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_batch_calls_a_helper_and_every_datagram_is_answered_once() {
        let (server, client) = pair().await;
        // Queued before the workers start: the first receive comes back
        // full and calls the helper, which answers the rest while the first
        // worker is slow with its batch.
        let total = 3 * BATCH as u16;
        for i in 0..total {
            client.send(&i.to_be_bytes()).await.expect("send");
        }
        let (answered, shutdown) = start(server, true);
        assert_eq!(
            receive(&client, total.into()).await,
            (0..total).collect::<Vec<_>>()
        );
        let answered = answered.lock().expect("not poisoned").clone();
        assert_eq!(answered.iter().sum::<usize>(), usize::from(total));
        assert!(answered[1] > 0, "the helper answered nothing: {answered:?}");
        shutdown.cancel();
    }
}
