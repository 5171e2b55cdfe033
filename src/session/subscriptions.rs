//! The subscriptions one session keeps: which filters, at which QoS and options, whether
//! the broker confirmed them, and the SUBSCRIBE requests on their way.
//!
//! A plain type with no I/O: the [`SessionActor`](super::SessionActor) asks it what to
//! send after a CONNACK ([`Subscriptions::on_connected`]), tells it what rumqttc wrote
//! ([`Subscriptions::on_written`]) and what the broker answered
//! ([`Subscriptions::on_suback`]), and sends what it is told. `R` is what answers a caller
//! waiting for its SUBACK (a oneshot sender in the actor).

use std::collections::{BTreeSet, VecDeque};

use crate::message::{QoS, SubscribeOptions};
use crate::reason::ReasonCode;
use crate::small_map::SmallMap;

/// One kept subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Subscription {
    pub(crate) qos: QoS,
    pub(crate) options: SubscribeOptions,
    /// The broker acknowledged it on the current connection (or kept it in its session).
    pub(crate) confirmed: bool,
}

/// A SUBSCRIBE handed to rumqttc: the filters it carries, and who waits for it.
#[derive(Debug)]
enum Request<R> {
    /// The subscriptions re-sent after a connect (nobody waits; `session_ready` follows).
    Restore(Vec<String>),
    /// One filter a caller subscribed.
    Single(String, Option<R>),
}

/// What to send after a CONNACK.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct RestorePlan {
    /// Filters to UNSUBSCRIBE (a persistent session's filters no longer wanted).
    pub(crate) unsubscribe: Vec<String>,
    /// Filters to SUBSCRIBE in one packet; empty: the session is ready at once.
    pub(crate) subscribe: Vec<(String, QoS, SubscribeOptions)>,
    /// Subscriptions dropped because the broker kept no session and
    /// `resume_subscriptions` is off.
    pub(crate) dropped: usize,
}

/// What a SUBACK settled.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SubAckOutcome<R> {
    /// No request of ours had this packet id.
    Unknown,
    /// The restored subscriptions: the session is ready. Refused filters are listed.
    Restored { refused: Vec<(String, ReasonCode)> },
    /// A caller's subscription: answer it (`Err` names the refusal; the filter was
    /// forgotten).
    Single {
        filter: String,
        responder: Option<R>,
        refused: Option<ReasonCode>,
    },
}

/// The subscriptions of one session. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct Subscriptions<R> {
    set: SmallMap<String, Subscription>,
    /// Requests handed to rumqttc, not yet written (in order).
    queue: VecDeque<Request<R>>,
    /// Requests written, by packet id, waiting for their SUBACK (a few at most: a list).
    inflight: Vec<(u16, Request<R>)>,
    /// Filters to UNSUBSCRIBE at the next connect (persistent sessions).
    stale: BTreeSet<String>,
}

impl<R> Default for Subscriptions<R> {
    fn default() -> Self {
        Subscriptions {
            set: SmallMap::default(),
            queue: VecDeque::new(),
            inflight: Vec::new(),
            stale: BTreeSet::new(),
        }
    }
}

impl<R> Subscriptions<R> {
    /// Subscriptions kept.
    pub(crate) fn len(&self) -> usize {
        self.set.len()
    }

    /// The kept subscription of `filter`.
    #[cfg(test)]
    pub(crate) fn get(&self, filter: &str) -> Option<&Subscription> {
        self.set.get(filter)
    }

    /// Remembers `filter`; returns true when it is already subscribed with the same QoS
    /// and options and confirmed (nothing to send).
    pub(crate) fn insert(&mut self, filter: &str, qos: QoS, options: SubscribeOptions) -> bool {
        let unchanged = self
            .set
            .get(filter)
            .is_some_and(|s| s.qos == qos && s.options == options && s.confirmed);
        self.stale.remove(filter);
        self.set.insert(
            filter.to_string(),
            Subscription {
                qos,
                options,
                confirmed: unchanged,
            },
        );
        unchanged
    }

    /// A SUBSCRIBE for one filter was handed to rumqttc; `responder` waits for its SUBACK.
    pub(crate) fn single_sent(&mut self, filter: String, responder: Option<R>) {
        self.queue.push_back(Request::Single(filter, responder));
    }

    /// Forgets `filter`. Returns whether the broker may have it (so an UNSUBSCRIBE is due).
    pub(crate) fn remove(&mut self, filter: &str, connected: bool) -> bool {
        self.set
            .remove(filter)
            .is_some_and(|s| s.confirmed || connected)
    }

    /// Remembers to UNSUBSCRIBE `filter` at the next connect (a persistent session's
    /// broker keeps subscriptions while the client is away).
    pub(crate) fn unsubscribe_later(&mut self, filter: &str) {
        self.stale.insert(filter.to_string());
    }

    /// After a CONNACK: what to send. With no session present every subscription is
    /// unconfirmed again (and, without `resume`, after the first connection, dropped).
    pub(crate) fn on_connected(
        &mut self,
        session_present: bool,
        resume: bool,
        ever_connected: bool,
    ) -> RestorePlan {
        let mut plan = RestorePlan::default();
        let stale = std::mem::take(&mut self.stale);
        if session_present {
            plan.unsubscribe = stale
                .into_iter()
                .filter(|f| !self.set.contains_key(f))
                .collect();
        } else {
            if !resume && ever_connected {
                plan.dropped = self.set.len();
                self.set.clear();
            }
            for s in self.set.values_mut() {
                s.confirmed = false;
            }
        }
        plan.subscribe = self
            .set
            .iter()
            .filter(|(_, s)| !s.confirmed)
            .map(|(f, s)| (f.clone(), s.qos, s.options))
            .collect();
        plan
    }

    /// The plan's SUBSCRIBE was handed to rumqttc.
    pub(crate) fn restore_sent(&mut self, plan: &RestorePlan) {
        let filters = plan.subscribe.iter().map(|(f, _, _)| f.clone()).collect();
        self.queue.push_back(Request::Restore(filters));
    }

    /// rumqttc wrote the next SUBSCRIBE with packet id `pkid`.
    pub(crate) fn on_written(&mut self, pkid: u16) {
        if let Some(req) = self.queue.pop_front() {
            self.inflight.push((pkid, req));
        }
        // Both lists are empty nearly all the time: give their memory back (a session
        // that subscribed once would keep ~0.8 KB otherwise; BENCHMARKS, "Memory").
        if self.queue.is_empty() {
            self.queue = VecDeque::new();
        }
    }

    /// The broker answered SUBSCRIBE `pkid`: one code per filter, in order.
    pub(crate) fn on_suback(
        &mut self,
        pkid: u16,
        codes: Vec<Result<QoS, ReasonCode>>,
    ) -> SubAckOutcome<R> {
        let Some(at) = self.inflight.iter().position(|(id, _)| *id == pkid) else {
            return SubAckOutcome::Unknown;
        };
        let (_, req) = self.inflight.remove(at);
        if self.inflight.is_empty() {
            self.inflight = Vec::new();
        }
        let filters: Vec<&String> = match &req {
            Request::Restore(f) => f.iter().collect(),
            Request::Single(f, _) => vec![f],
        };
        let mut refused = Vec::new();
        for (f, code) in filters.into_iter().zip(codes) {
            match code {
                Ok(_) => {
                    if let Some(s) = self.set.get_mut(f) {
                        s.confirmed = true;
                    }
                }
                Err(reason) => refused.push((f.clone(), reason)),
            }
        }
        match req {
            Request::Restore(_) => SubAckOutcome::Restored { refused },
            Request::Single(filter, responder) => {
                let refused = refused.pop().map(|(_, r)| r);
                if refused.is_some() {
                    self.set.remove(&filter);
                }
                SubAckOutcome::Single {
                    filter,
                    responder,
                    refused,
                }
            }
        }
    }

    /// The connection ended; rumqttc dropped the `drained` oldest requests it had not
    /// written. Every request sent or dropped is re-sent at the next connect (as part of
    /// the restore): the callers waiting for them are returned, to be answered `Ok`.
    pub(crate) fn on_lost(&mut self, drained: usize) -> Vec<R> {
        self.take_callers(drained)
    }

    /// The session ends: every caller still waiting is returned, to be answered with an
    /// error.
    pub(crate) fn close(&mut self) -> Vec<R> {
        self.take_callers(usize::MAX)
    }

    /// Takes the `n` oldest requests not yet written and every written one; returns the
    /// callers waiting for them.
    fn take_callers(&mut self, n: usize) -> Vec<R> {
        let n = n.min(self.queue.len());
        let written = std::mem::take(&mut self.inflight);
        self.queue
            .drain(..n)
            .chain(written.into_iter().map(|(_, r)| r))
            .filter_map(|r| match r {
                Request::Single(_, r) => r,
                Request::Restore(_) => None,
            })
            .collect()
    }

    /// The actor was restarted: its requests went with the old client.
    pub(crate) fn forget_requests(&mut self) {
        self.queue.clear();
        self.inflight.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q1: QoS = QoS::AtLeastOnce;

    fn opts() -> SubscribeOptions {
        SubscribeOptions::default()
    }

    fn subs(filters: &[&str]) -> Subscriptions<u32> {
        let mut s = Subscriptions::default();
        for f in filters {
            assert!(!s.insert(f, Q1, opts()));
        }
        s
    }

    #[test]
    fn a_connect_without_session_re_sends_everything_and_with_one_only_the_unconfirmed() {
        let cases: &[(bool, bool, bool, usize, usize)] = &[
            // session present, resume, ever connected → subscribe count, dropped
            (false, true, false, 2, 0),
            (false, true, true, 2, 0),
            (false, false, false, 2, 0),
            (false, false, true, 0, 2),
            (true, true, true, 1, 0),
        ];
        for &(present, resume, ever, subscribe, dropped) in cases {
            let mut s = subs(&["a/#", "b/#"]);
            let plan = s.on_connected(false, true, false);
            s.restore_sent(&plan);
            s.on_written(1);
            // Only a/# confirmed.
            let out = s.on_suback(1, vec![Ok(Q1), Err(ReasonCode(0x80))]);
            assert!(matches!(out, SubAckOutcome::Restored { ref refused } if refused.len() == 1));
            let plan = s.on_connected(present, resume, ever);
            assert_eq!(
                (plan.subscribe.len(), plan.dropped),
                (subscribe, dropped),
                "present {present} resume {resume} ever {ever}"
            );
        }
    }

    #[test]
    fn stale_filters_are_unsubscribed_only_when_the_broker_kept_the_session() {
        let mut s = subs(&["keep/#"]);
        s.unsubscribe_later("old/#");
        s.unsubscribe_later("keep/#");
        let plan = s.on_connected(true, true, true);
        assert_eq!(plan.unsubscribe, vec!["old/#".to_string()]);
        s.unsubscribe_later("old/#");
        assert!(s.on_connected(false, true, true).unsubscribe.is_empty());
    }

    #[test]
    fn a_refused_single_subscription_is_forgotten_and_reported() {
        let mut s = subs(&[]);
        s.insert("x/#", Q1, opts());
        s.single_sent("x/#".into(), Some(7));
        s.on_written(3);
        assert_eq!(s.on_suback(9, vec![]), SubAckOutcome::Unknown);
        let out = s.on_suback(3, vec![Err(ReasonCode(0x87))]);
        assert_eq!(
            out,
            SubAckOutcome::Single {
                filter: "x/#".into(),
                responder: Some(7),
                refused: Some(ReasonCode(0x87)),
            }
        );
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn inserting_the_same_confirmed_subscription_again_sends_nothing() {
        let mut s = subs(&["x/#"]);
        let plan = s.on_connected(false, true, false);
        s.restore_sent(&plan);
        s.on_written(1);
        let _ = s.on_suback(1, vec![Ok(Q1)]);
        assert!(s.get("x/#").is_some_and(|x| x.confirmed));
        assert!(s.insert("x/#", Q1, opts()));
        assert!(
            !s.insert("x/#", QoS::AtMostOnce, opts()),
            "a QoS change is sent"
        );
    }

    #[test]
    fn a_lost_connection_hands_back_waiting_callers_and_close_hands_back_the_rest() {
        let mut s = subs(&[]);
        for (i, f) in ["a", "b", "c"].iter().enumerate() {
            s.insert(f, Q1, opts());
            s.single_sent((*f).to_string(), Some(i as u32));
        }
        s.on_written(10); // "a" written, "b" and "c" queued
                          // rumqttc dropped one queued request ("b"); "a" was in flight.
        let mut answered = s.on_lost(1);
        answered.sort_unstable();
        assert_eq!(answered, vec![0, 1]);
        assert_eq!(s.close(), vec![2]);
        assert!(s.close().is_empty());
    }

    #[test]
    fn removing_reports_whether_the_broker_may_have_the_filter() {
        let mut s = subs(&["a", "b"]);
        assert!(!s.remove("a", false), "never confirmed, not connected");
        assert!(s.remove("b", true), "connected: it may have been sent");
        assert!(!s.remove("zzz", true));
    }
}
