//! How much work for newcomers one loop turn takes on: connections accepted,
//! and frames from connections that have not logged in (LOGIN, RESUME,
//! SIGNUP, and whatever else they send). After a restart, 10,000 clients
//! reconnect within a second; each accept and each RESUME is cheap (no hash:
//! tickets), but a turn that takes all of them at once (the listener's whole
//! backlog, then 1,024 ready connections' RESUMEs, their replies and log
//! lines) ran 50-130 ms, and every logged-in client's PING waited for it.
//! Sliced like the password hashes (`KDF_TURN_BUDGET`) and TLS handshakes
//! (`tls::HANDSHAKE_BUDGET`), a turn stays a few milliseconds.
//!
//! Invariants:
//! - Per turn, at most [`ACCEPTS_PER_TURN`] accepts and at most
//!   [`LOGIN_FRAMES_PER_TURN`] login attempts (`LOGIN`, `RESUME`, `SIGNUP`)
//!   from connections not logged in. Once that is spent, a newcomer's input
//!   of any kind waits for the next turn; before, its other lines (a `PING`,
//!   a wrong verb: one short reply each) pass without counting.
//! - Logged-in connections are never held back by this budget: their PING
//!   is answered in the turn it is read, whatever the storm.
//! - Nothing is lost or waits for an event that may not come (readiness is
//!   edge-triggered): a connection held back is read next turn without an
//!   event (`Driver::read_next_turn`), and a listener with connections left
//!   is accepted from again next turn (`accept_again`), the poll not
//!   sleeping meanwhile.
//! - A held-back frame stays in the socket or the line reader: it is never
//!   taken and dropped.

use super::engine::{ConnId, Engine};
use crate::proto::command::Verb;
use crate::proto::Frame;

/// Connections accepted per loop turn; the rest wait in the listen backlog.
pub const ACCEPTS_PER_TURN: usize = 32;
/// Login attempts taken per loop turn from connections not logged in.
pub const LOGIN_FRAMES_PER_TURN: usize = 64;

/// Whether a newcomer's frame is a login attempt, the unit of the budget:
/// it starts a session (and its log line, timers, presence events) or a
/// password hash.
pub fn is_login_attempt(frame: &Frame) -> bool {
    let Frame::Line(line) = frame else {
        return false;
    };
    let name = line.split(' ').next().unwrap_or("");
    Verb::from_name(name).is_some_and(|v| matches!(v, Verb::Login | Verb::Resume | Verb::Signup))
}

/// What is left of this turn's budgets, and whether the listener has more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    accepts_left: usize,
    frames_left: usize,
    /// The last accept stopped for the budget, not for an empty backlog.
    accept_again: bool,
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            accepts_left: ACCEPTS_PER_TURN,
            frames_left: LOGIN_FRAMES_PER_TURN,
            accept_again: false,
        }
    }
}

impl Admission {
    /// At the start of every loop turn.
    pub fn new_turn(&mut self) {
        self.accepts_left = ACCEPTS_PER_TURN;
        self.frames_left = LOGIN_FRAMES_PER_TURN;
    }

    /// May one more connection be accepted now? False: the listener is
    /// to be accepted from again next turn.
    pub fn admit_accept(&mut self) -> bool {
        if self.accepts_left == 0 {
            self.accept_again = true;
            return false;
        }
        self.accepts_left -= 1;
        true
    }

    /// `accept` said the backlog is empty.
    pub fn backlog_empty(&mut self) {
        self.accept_again = false;
    }

    /// Connections were left in the backlog for the budget: accept next
    /// turn without waiting for an event (and do not sleep until then).
    pub fn accept_again(&self) -> bool {
        self.accept_again
    }

    /// May a frame be taken from a connection (`logged_in` or not)?
    /// Call [`Admission::took_frame`] with each one taken.
    pub fn may_take(&self, logged_in: bool) -> bool {
        logged_in || self.frames_left > 0
    }

    /// A frame was taken from a connection (`logged_in` when it was read):
    /// a newcomer's login attempt counts against the budget.
    pub fn took_frame(&mut self, logged_in: bool, frame: &Frame) {
        if !logged_in && is_login_attempt(frame) {
            self.frames_left = self.frames_left.saturating_sub(1);
        }
    }
}

impl Engine {
    /// Whether `conn` carries a session (its input is not newcomers' work).
    pub fn is_logged_in(&self, conn: ConnId) -> bool {
        self.sessions.user_of(conn).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Frame {
        Frame::Line(s.to_owned())
    }

    #[test]
    fn login_attempts_are_login_signup_and_resume_in_any_case() {
        for l in [
            "LOGIN a b",
            "login a b",
            "RESUME a t",
            "SIGNUP a b b",
            "Resume",
        ] {
            assert!(is_login_attempt(&line(l)), "{l}");
        }
        for l in ["PING", "LIST", "LOGINX a b", "", "QUIT"] {
            assert!(!is_login_attempt(&line(l)), "{l}");
        }
        assert!(!is_login_attempt(&Frame::TooLong));
        assert!(!is_login_attempt(&Frame::BadUtf8));
    }

    #[test]
    fn each_turn_admits_its_budget_and_logged_in_input_always() {
        let mut a = Admission::default();
        for _turn in 0..3 {
            a.new_turn();
            let accepted = (0..1000).take_while(|_| a.admit_accept()).count();
            assert_eq!(accepted, ACCEPTS_PER_TURN);
            assert!(a.accept_again(), "the backlog is left for next turn");
            // A newcomer's PING does not count; its RESUMEs do.
            a.took_frame(false, &line("PING"));
            let mut taken = 0;
            while a.may_take(false) {
                a.took_frame(false, &line("resume alice 00"));
                taken += 1;
                assert!(taken <= LOGIN_FRAMES_PER_TURN);
            }
            assert_eq!(taken, LOGIN_FRAMES_PER_TURN);
            // A logged-in client's PING is never held back.
            assert!(a.may_take(true));
            a.took_frame(true, &line("PING"));
            assert!(a.may_take(true));
        }
        a.backlog_empty();
        assert!(!a.accept_again());
    }
}
