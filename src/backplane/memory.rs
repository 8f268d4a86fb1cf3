//! The in-process backplane, the default: notifications go straight into
//! this process's history. An ordinary [`Backplane`], like the others.

use std::sync::Weak;

use super::{Backplane, Link, Publication, Receiver};

/// No other instances: every notification reaches the sessions of this
/// process only, with cursors this process assigns (`<epoch>-<seq>`).
///
/// ```
/// use tidings::backplane::Memory;
/// use tidings::{Config, Notifier};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let notifier = Notifier::with_config(Config::default().backplane(Memory)); // the same as the default
/// assert_eq!(notifier.health().backplane, "in-process");
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory;

impl Backplane for Memory {
    fn name(&self) -> &'static str {
        super::Engine::Memory.name()
    }

    fn start(&self, _hub: Weak<dyn Receiver>) -> Box<dyn Link> {
        Box::new(MemoryLink)
    }
}

/// Publishing is delivering: the hub that publishes is the only receiver.
struct MemoryLink;

impl Link for MemoryLink {
    fn publish(&self, hub: &dyn Receiver, publication: Publication) {
        let done = match publication.into_single() {
            Ok((notification, done)) => {
                hub.deliver_one(notification, None);
                done
            }
            Err(batch) => {
                let (notifications, done) = batch.into_parts();
                hub.deliver(&mut notifications.map(|n| (n, None)));
                done
            }
        };
        done.finish(Ok(()));
    }
}
