//! Running several futures of one task at once, without spawning (they may borrow).
//!
//! [`join_all`] awaits every future; [`Pending`] hands back the outputs of those that are
//! done, as they finish. Both poll each future only when the task is woken; with a few
//! hundred futures at most (the regions of a batch), polling them all is cheap.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// A boxed future of one task.
pub(crate) type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Awaits every future at once; the outputs come in the futures' order.
pub(crate) async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Futures in flight, whose outputs are taken as they finish.
pub(crate) struct Pending<'a, T> {
    futures: Vec<Boxed<'a, T>>,
}

impl<'a, T> Pending<'a, T> {
    /// None in flight.
    pub(crate) fn new() -> Self {
        Pending {
            futures: Vec::new(),
        }
    }

    /// Adds a future.
    pub(crate) fn push(&mut self, future: Boxed<'a, T>) {
        self.futures.push(future);
    }

    /// Whether none is in flight.
    pub(crate) fn is_empty(&self) -> bool {
        self.futures.is_empty()
    }

    /// Waits until at least one future is done and returns the outputs of every future
    /// done at that poll (empty, at once, when none is in flight).
    pub(crate) async fn next_done(&mut self) -> Vec<T> {
        if self.futures.is_empty() {
            return Vec::new();
        }
        std::future::poll_fn(|cx| {
            let done = self.poll_done(cx);
            if done.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(done)
            }
        })
        .await
    }

    /// The outputs of the futures done now, without waiting.
    pub(crate) async fn done_now(&mut self) -> Vec<T> {
        std::future::poll_fn(|cx| Poll::Ready(self.poll_done(cx))).await
    }

    fn poll_done(&mut self, cx: &mut std::task::Context<'_>) -> Vec<T> {
        let mut done = Vec::new();
        let mut index = 0;
        while index < self.futures.len() {
            match self.futures[index].as_mut().poll(cx) {
                Poll::Ready(value) => {
                    done.push(value);
                    drop(self.futures.remove(index));
                }
                Poll::Pending => index += 1,
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn join_all_keeps_the_order_and_pending_hands_back_what_is_done() {
        let sleep = |ms: u64, value: u32| async move {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            value
        };
        assert_eq!(
            join_all([sleep(30, 1), sleep(10, 2), sleep(20, 3)]).await,
            [1, 2, 3]
        );

        let mut pending: Pending<'_, u32> = Pending::new();
        assert!(pending.next_done().await.is_empty());
        pending.push(Box::pin(sleep(10, 1)));
        pending.push(Box::pin(sleep(10, 2)));
        pending.push(Box::pin(sleep(20, 3)));
        let mut first = pending.next_done().await;
        first.sort_unstable();
        assert_eq!(first, [1, 2]);
        assert!(pending.done_now().await.is_empty());
        assert_eq!(pending.next_done().await, [3]);
        assert!(pending.is_empty());
    }
}
