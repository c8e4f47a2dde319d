//! openraft's [`AsyncRuntime`] on smol, so Raft runs on the broker's executor (never a
//! tokio runtime; tokio's `sync` primitives are runtime-agnostic and used as openraft does).

use std::fmt;
use std::future::Future;
use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use openraft::async_runtime::TokioOneShotSender;
use openraft::{AsyncRuntime, OptionalSend};

/// The smol runtime marker for openraft's type config.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct SmolRuntime;

/// A monotonic instant (openraft needs its own `Instant` trait on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SmolInstant(pub std::time::Instant);

impl Add<Duration> for SmolInstant {
    type Output = Self;
    fn add(self, d: Duration) -> Self {
        SmolInstant(self.0 + d)
    }
}
impl AddAssign<Duration> for SmolInstant {
    fn add_assign(&mut self, d: Duration) {
        self.0 += d;
    }
}
impl Sub<Duration> for SmolInstant {
    type Output = Self;
    fn sub(self, d: Duration) -> Self {
        SmolInstant(self.0 - d)
    }
}
impl Sub<SmolInstant> for SmolInstant {
    type Output = Duration;
    fn sub(self, other: SmolInstant) -> Duration {
        self.0.saturating_duration_since(other.0)
    }
}
impl SubAssign<Duration> for SmolInstant {
    fn sub_assign(&mut self, d: Duration) {
        self.0 -= d;
    }
}
impl openraft::Instant for SmolInstant {
    fn now() -> Self {
        SmolInstant(std::time::Instant::now())
    }
}

/// A spawned task's handle with tokio's semantics: dropping it *detaches* the task
/// (smol's `Task` would cancel it, and openraft drops the handles of tasks it expects to run).
pub struct JoinHandle<T>(Option<smol::Task<T>>);

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.detach();
        }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.0.as_mut() {
            Some(task) => Pin::new(task).poll(cx).map(Ok),
            None => Poll::Ready(Err(JoinError)),
        }
    }
}

/// Never produced by a running task: smol propagates a task's panic to its awaiter.
#[derive(Debug)]
pub struct JoinError;

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("task already joined")
    }
}

/// A sleep that yields `()` (smol's `Timer` yields the `Instant` it fired at).
pub struct Sleep(smol::Timer);

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// The future of [`AsyncRuntime::timeout`].
pub struct Timeout<T> {
    future: Pin<Box<T>>,
    timer: smol::Timer,
}

impl<R, T: Future<Output = R>> Future for Timeout<T> {
    type Output = Result<R, TimeoutError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(r) = self.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(r));
        }
        match Pin::new(&mut self.timer).poll(cx) {
            Poll::Ready(_) => Poll::Ready(Err(TimeoutError)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The deadline of a [`Timeout`] passed.
#[derive(Debug)]
pub struct TimeoutError;

impl fmt::Display for TimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl AsyncRuntime for SmolRuntime {
    type JoinError = JoinError;
    type JoinHandle<T: OptionalSend + 'static> = JoinHandle<T>;
    type Sleep = Sleep;
    type Instant = SmolInstant;
    type TimeoutError = TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<T>;
    type ThreadLocalRng = rand::rngs::ThreadRng;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        JoinHandle(Some(smol::spawn(future)))
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Sleep(smol::Timer::after(duration))
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Sleep(smol::Timer::at(deadline.0))
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        Timeout { future: Box::pin(future), timer: smol::Timer::after(duration) }
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        Timeout { future: Box::pin(future), timer: smol::Timer::at(deadline.0) }
    }

    fn is_panic(_join_error: &Self::JoinError) -> bool {
        false
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        rand::thread_rng()
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (TokioOneShotSender(tx), rx)
    }
}
