//! One subscriber's view of the hub: events in publication order, lags reported in their
//! place, and an end when the gateway stops serving.

use std::fmt;
use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};

use super::{EventHub, GatewayEvent};

/// What a subscriber receives next.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// The next event.
    Event(Arc<GatewayEvent>),
    /// The subscriber read too slowly: this many events were dropped before the next one it
    /// receives (they are counted in [`EventHub::dropped`]).
    Lagged {
        /// Events it missed.
        dropped: u64,
    },
}

/// A subscription to an [`EventHub`] ([`EventHub::subscribe`]).
pub struct Subscription {
    hub: Arc<EventHub>,
    pub(super) events: broadcast::Receiver<Arc<GatewayEvent>>,
    closing: watch::Receiver<bool>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("behind", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    pub(super) fn new(hub: Arc<EventHub>, events: broadcast::Receiver<Arc<GatewayEvent>>) -> Self {
        let closing = hub.closing.subscribe();
        Self {
            hub,
            events,
            closing,
        }
    }

    /// The next event or lag report; `None` once the gateway stops serving
    /// ([`EventHub::close`]), so that open streams do not hold up a graceful stop.
    pub async fn recv(&mut self) -> Option<Received> {
        if *self.closing.borrow() {
            return None;
        }
        tokio::select! {
            biased;
            _ = self.closing.wait_for(|closing| *closing) => None,
            received = self.events.recv() => match received {
                Ok(event) => Some(Received::Event(event)),
                Err(RecvError::Lagged(dropped)) => {
                    self.hub.count_dropped(dropped);
                    Some(Received::Lagged { dropped })
                }
                Err(RecvError::Closed) => None,
            },
        }
    }

    /// The subscription as a stream of what [`Subscription::recv`] returns.
    pub fn into_stream(self) -> impl Stream<Item = Received> + Send + 'static {
        futures_util::stream::unfold(self, |mut subscription| async move {
            let received = subscription.recv().await?;
            Some((received, subscription))
        })
    }
}
