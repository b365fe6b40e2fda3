//! Futures polled only when they asked to be.
//!
//! `select!` and `try_join!` poll every branch each time their task wakes. A
//! relayed connection's task wakes about twice per request (the request
//! arrives, the answer arrives), and each time it polled both directions,
//! the idle timer and the reset and shutdown signals, though one of them at
//! most had anything to do: about 850 of the 7,000 instructions poolgate
//! spent per kept-alive request (callgrind). [`on_wake`] polls its future
//! with an [`OwnWaker`] and only once that waker has fired since (and on its
//! first poll), so a wake costs a branch that did not ask for it a counter
//! test. Futures that seldom fire (the timer, the signals) may share one
//! `OwnWaker`: one firing polls them all.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// What an [`OwnWaker`] does when it fires: count, and wake the task.
#[derive(Debug)]
struct Signal {
    fired: AtomicU64,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.fetch_add(1, Ordering::Release);
        self.task.wake();
    }
}

/// A waker of one or more futures' own, which records that it fired before
/// it wakes their task. (Only the signal is kept: the waker is made from it
/// when a future is polled, which keeps every connection's state 16 bytes
/// smaller per `OwnWaker`.)
#[derive(Debug)]
pub(crate) struct OwnWaker(Arc<Signal>);

impl OwnWaker {
    pub(crate) fn new() -> Self {
        Self(Arc::new(Signal {
            fired: AtomicU64::new(0),
            task: AtomicWaker::new(),
        }))
    }
}

/// `seen` before the first poll: `fired` counts from 0 and never gets here.
const NEVER_POLLED: u64 = u64::MAX;

pin_project_lite::pin_project! {
    /// See [`on_wake`].
    pub(crate) struct OnWake<'a, F> {
        // Pinned in place: a future moved into a local of an async fn would
        // keep its room twice.
        #[pin]
        future: F,
        own: &'a OwnWaker,
        // How often `own` had fired when `future` was last polled.
        seen: u64,
    }
}

/// `future`, polled on its first poll and then only after `own` fired.
pub(crate) fn on_wake<F: Future>(own: &OwnWaker, future: F) -> OnWake<'_, F> {
    OnWake {
        future,
        own,
        seen: NEVER_POLLED,
    }
}

impl<F: Future> Future for OnWake<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let signal = &this.own.0;
        // The task's waker is in place before the count is read, so a wake
        // that comes after the read wakes this task again.
        signal.task.register(cx.waker());
        let fired = signal.fired.load(Ordering::Acquire);
        if *this.seen == fired {
            return Poll::Pending;
        }
        *this.seen = fired;
        let waker = Waker::from(Arc::clone(signal));
        this.future.poll(&mut Context::from_waker(&waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    /// Counts its polls; ready once `open` is set, waking its task when told.
    struct Counted<'a> {
        polls: &'a AtomicUsize,
        open: &'a AtomicBool,
        wakers: &'a std::sync::Mutex<Option<Waker>>,
    }

    impl Future for Counted<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::Relaxed);
            if self.open.load(Ordering::Relaxed) {
                return Poll::Ready(());
            }
            *self.wakers.lock().expect("not poisoned") = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Wake the task through the waker a `Counted` left.
    fn fire(wakers: &std::sync::Mutex<Option<Waker>>) {
        wakers
            .lock()
            .expect("not poisoned")
            .take()
            .expect("the future left its waker")
            .wake();
    }

    #[test]
    fn the_future_is_polled_first_and_then_only_after_its_own_wake() {
        let (polls, open, wakers) = (
            AtomicUsize::new(0),
            AtomicBool::new(false),
            std::sync::Mutex::new(None),
        );
        let own = OwnWaker::new();
        let wrapped = on_wake(
            &own,
            Counted {
                polls: &polls,
                open: &open,
                wakers: &wakers,
            },
        );
        let mut wrapped = std::pin::pin!(wrapped);
        let task = Arc::new(Counter::default());
        let task_waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&task_waker);

        assert!(wrapped.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 1, "polled on the first poll");
        // The task woke for something else: the future is not polled.
        for _ in 0..3 {
            assert!(wrapped.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1);
        // Its own waker fires: the task is woken and the future polled.
        open.store(true, Ordering::Relaxed);
        fire(&wakers);
        assert_eq!(task.wakes.load(Ordering::Relaxed), 1);
        assert!(wrapped.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn futures_sharing_a_waker_are_all_polled_when_it_fires() {
        let (polls, open, wakers) = (
            [AtomicUsize::new(0), AtomicUsize::new(0)],
            AtomicBool::new(false),
            std::sync::Mutex::new(None),
        );
        let own = OwnWaker::new();
        let counted = |polls| Counted {
            polls,
            open: &open,
            wakers: &wakers,
        };
        let mut first = std::pin::pin!(on_wake(&own, counted(&polls[0])));
        let mut second = std::pin::pin!(on_wake(&own, counted(&polls[1])));
        let task_waker = Waker::from(Arc::new(Counter::default()));
        let mut cx = Context::from_waker(&task_waker);
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        assert!(first.as_mut().poll(&mut cx).is_pending());
        // The waker the second one left fires: both are polled again.
        fire(&wakers);
        assert!(first.as_mut().poll(&mut cx).is_pending());
        assert!(second.as_mut().poll(&mut cx).is_pending());
        let counts = polls.each_ref().map(|p| p.load(Ordering::Relaxed));
        assert_eq!(counts, [2, 2]);
    }

    #[derive(Default)]
    struct Counter {
        wakes: AtomicUsize,
    }

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_inside_fires_through_its_own_waker() {
        let started = tokio::time::Instant::now();
        on_wake(
            &OwnWaker::new(),
            tokio::time::sleep(std::time::Duration::from_secs(5)),
        )
        .await;
        assert_eq!(started.elapsed(), std::time::Duration::from_secs(5));
    }
}
