//! Messages from one hub to every hub: orders that must reach the sessions
//! of every instance, not only of the one where the application gave them.
//!
//! They travel through the same backplane as everything else (so with the
//! outbox they are as durable and as ordered as the notifications around
//! them), out of band: marked as orders (`control`, which only this crate
//! sets), under a reserved collection that applications cannot publish to.
//! Each hub acts on them as they are delivered instead of appending them to
//! its history: no client ever receives one.

use serde::{Deserialize, Serialize};

use crate::{Identity, Notification, Op};

/// The reserved collection. Client subscriptions cannot name it (`$` is
/// not allowed in collection names).
const REAUTHENTICATE: &str = "$reauthenticate";

/// An order to close sessions with 4401 so that they authorize again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reauthenticate {
    /// Whose sessions.
    pub(crate) who: Who,
    /// The hub that gave the order. It told its own sessions when the
    /// application called it, so it ignores the order when it comes back
    /// (by then a client may have authorized again, and must stay).
    pub(crate) from: u64,
}

/// Whose sessions must re-authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Who {
    /// The sessions of the user with this id ([`Identity::user`]).
    User(String),
    /// The sessions in this audience.
    Audience(String),
}

impl Reauthenticate {
    /// The notification that carries this order to every hub.
    pub(crate) fn notification(&self) -> Notification {
        let mut n = Notification::new(REAUTHENTICATE, Op::Update)
            .with_data(self)
            .expect("strings and a number serialize");
        n.control = true;
        n
    }

    /// The order a delivered notification carries, if it is one (`None`
    /// for the application's notifications).
    ///
    /// An order without the `control` mark is accepted too: instances of
    /// 0.1 send them so, and the backplane is written only by instances
    /// (applications cannot publish a reserved collection), so during a
    /// rolling deploy their orders still reach every session. (The next
    /// release can require the mark.)
    pub(crate) fn carried_by(n: &Notification) -> Option<Option<Reauthenticate>> {
        if n.collection != REAUTHENTICATE {
            return None;
        }
        // A malformed order (not from this crate) is dropped, not delivered.
        Some(n.data.as_deref().and_then(|data| serde_json::from_str(data.get()).ok()))
    }

    /// Whether a session with `identity` must re-authenticate.
    pub(crate) fn concerns(&self, identity: &Identity) -> bool {
        match &self.who {
            Who::User(user) => identity.user_id() == Some(user.as_str()),
            Who::Audience(audience) => identity.belongs_to(audience),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_round_trip_and_other_notifications_are_not_orders() {
        for who in [Who::User("3".into()), Who::Audience("forum:5".into())] {
            let order = Reauthenticate { who, from: 7 };
            assert_eq!(Reauthenticate::carried_by(&order.notification()), Some(Some(order)));
        }
        assert_eq!(Reauthenticate::carried_by(&Notification::new("posts", Op::Update)), None);
        assert_eq!(Reauthenticate::carried_by(&Notification::new("$other", Op::Update)), None);
        // An order from an instance before the mark (a rolling deploy) is
        // still one. (Applications cannot publish it: see
        // `tests/delivery.rs`, reserved collections.)
        let order = Reauthenticate { who: Who::Audience("staff".into()), from: 1 };
        let unmarked = Notification::new(REAUTHENTICATE, Op::Update).with_data(&order).unwrap();
        assert!(unmarked.is_reserved());
        assert_eq!(Reauthenticate::carried_by(&unmarked), Some(Some(order)));
        let mut malformed = Notification::new(REAUTHENTICATE, Op::Update);
        malformed.control = true;
        assert_eq!(Reauthenticate::carried_by(&malformed), Some(None));
        // Orders cross instances as orders.
        let order = Reauthenticate { who: Who::User("3".into()), from: 7 };
        let back =
            crate::backplane::envelope::decode(&crate::backplane::envelope::encode(&order.notification()));
        assert_eq!(Reauthenticate::carried_by(&back.unwrap()), Some(Some(order)));
    }
}
