//! The order of a fan-out's work (`delivery.rs`, `ParkedAcks`): its
//! datagrams go out before the ACKs that came back meanwhile are handled,
//! yet no ACK is lost, none waits past `PARK_MAX_AGE`, and a `PING` is
//! answered in the input that brings it. Driven turn by turn, as the driver
//! does: one `Input::Timeout` per loop turn, datagrams fed between turns.

use super::*;
use crate::server::delivery::PARKED_TURN_BUDGET;
use crate::server::engine::FANOUT_BATCH;

/// Alice plus `n` users logged in, each registered on UDP at port 10000 + i;
/// returns the sim, alice's connection and the users' tokens by address.
fn many_on_udp(n: usize) -> (Sim, ConnId, HashMap<SocketAddr, String>) {
    // Cheap hashes: thousands of logins, and hashing is not under test.
    let mut sim = Sim::new(EngineConfig {
        kdf_iterations: 1,
        ..cfg()
    });
    let (a, _) = sim.login_new("alice");
    let mut tokens = HashMap::new();
    for i in 0..n {
        let (_, t) = sim.login_new(&format!("u{i}"));
        let from = udp(10000 + i as u16);
        sim.register(from, &t);
        tokens.insert(from, t);
    }
    sim.lines.clear();
    (sim, a, tokens)
}

/// What one loop turn put out.
#[derive(Default)]
struct Turn {
    bcasts: Vec<SocketAddr>,
    pongs: Vec<SocketAddr>,
    stored: usize,
}

/// Runs one turn (`Input::Timeout`) or one input and collects its outputs.
fn step(sim: &mut Sim, input: Input<'_>) -> Turn {
    sim.engine.handle(sim.now, input);
    let mut t = Turn::default();
    while let Some(o) = sim.engine.poll_output() {
        match o {
            Output::Datagram { to, bytes } if bytes.starts_with(b"BCAST ") => t.bcasts.push(to),
            Output::Datagram { to, bytes } if &*bytes == b"PONG" => t.pongs.push(to),
            Output::StoreDelivery(row) => {
                sim.stored_deliveries.push(row);
                t.stored += 1;
            }
            Output::StoreBroadcast { conn, record } => sim.engine.handle(
                sim.now,
                Input::BroadcastStored {
                    conn,
                    record,
                    ok: true,
                },
            ),
            _ => {}
        }
    }
    t
}

fn ack(sim: &mut Sim, from: SocketAddr, token: &str, id: u64) -> Turn {
    let text = format!("ACK {token} {id}");
    step(
        sim,
        Input::Datagram {
            from,
            bytes: text.as_bytes(),
        },
    )
}

fn start_broadcast(sim: &mut Sim, a: ConnId) {
    sim.engine.handle(
        sim.now,
        Input::Frame {
            conn: a,
            frame: Frame::Line("BROADCAST to all".into()),
        },
    );
}

#[test]
fn a_fanouts_datagrams_go_out_before_the_acks_that_came_meanwhile_are_handled() {
    // Four turns of sending: more ACKs park than one turn handles.
    const N: usize = 3 * FANOUT_BATCH + 100;
    let (mut sim, a, tokens) = many_on_udp(N);
    start_broadcast(&mut sim, a);
    let pinger = udp(10000);
    let mut sent = Vec::new();
    let mut turns = 0;
    loop {
        let t = step(&mut sim, Input::Timeout);
        turns += 1;
        assert!(turns < 100, "the fan-out never ended");
        assert!(t.bcasts.len() <= FANOUT_BATCH, "a turn stays bounded");
        let fanout_done = sim.engine.fanout.is_empty();
        if t.stored > 0 {
            assert_eq!(
                sent.len() + t.bcasts.len(),
                N,
                "an ACK handled before the fan-out was out"
            );
        }
        assert!(t.stored <= PARKED_TURN_BUDGET, "a turn stays bounded");
        // Every recipient of this turn ACKs before the next turn, as a fast
        // client would; a PING comes in the middle.
        for (k, &to) in t.bcasts.iter().enumerate() {
            let t2 = ack(&mut sim, to, &tokens[&to], 1);
            if !fanout_done {
                assert_eq!(t2.stored, 0, "parked, not handled, during the fan-out");
            }
            if k == 10 {
                let ping = format!("PING {}", tokens[&pinger]);
                let p = step(
                    &mut sim,
                    Input::Datagram {
                        from: pinger,
                        bytes: ping.as_bytes(),
                    },
                );
                assert_eq!(p.pongs, vec![pinger], "a PING waits for no fan-out");
            }
        }
        sent.extend(t.bcasts);
        if fanout_done && sim.engine.parked.is_empty() {
            break;
        }
    }
    assert_eq!(sent.len(), N, "one datagram per recipient");
    // Every ACK counted, once.
    assert_eq!(sim.stored_deliveries.len(), N);
    let rows: std::collections::HashSet<String> = sim
        .stored_deliveries
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    assert_eq!(rows.len(), N, "a delivery stored twice");
    // No retransmit follows: the parked ACKs cancelled them.
    sim.advance(Duration::from_secs(20));
    assert!(
        sim.take_datagrams()
            .iter()
            .all(|(_, d)| !d.starts_with("BCAST")),
        "a retransmit after every ACK came"
    );
}

#[test]
fn a_parked_ack_waits_no_longer_than_park_max_age_and_shutdown_keeps_it() {
    let (mut sim, a, tokens) = many_on_udp(2 * FANOUT_BATCH + 10);
    start_broadcast(&mut sim, a);
    step(&mut sim, Input::Timeout); // stored, queued
    let first = step(&mut sim, Input::Timeout);
    assert_eq!(first.bcasts.len(), FANOUT_BATCH);
    for &to in &first.bcasts[..5] {
        ack(&mut sim, to, &tokens[&to], 1);
    }
    assert_eq!(sim.engine.parked.len(), 5);
    // The fan-out is not out, but the oldest ACK has waited its limit: the
    // next turn handles them (long before the first retransmit at 0.5 s).
    sim.now += Duration::from_millis(100);
    let t = step(&mut sim, Input::Timeout);
    assert!(!sim.engine.fanout.is_empty());
    assert_eq!(t.stored, 5);
    assert!(t.bcasts.iter().all(|to| !first.bcasts.contains(to)));
    // ACKs parked when the server stops are counted, not lost.
    let next = t.bcasts[0];
    ack(&mut sim, next, &tokens[&next], 1);
    assert_eq!(sim.engine.parked.len(), 1);
    let t = step(&mut sim, Input::Shutdown);
    assert_eq!(t.stored, 1);
    assert_eq!(sim.stored_deliveries.len(), 6);
}

/// Only plaintext `ACK`s wait. Anything else during a fan-out (a forged or
/// malformed datagram, a `REGISTER`) is handled, and refused, at once.
#[test]
fn during_a_fanout_only_acks_are_parked() {
    let (mut sim, a, tokens) = many_on_udp(FANOUT_BATCH + 10);
    start_broadcast(&mut sim, a);
    step(&mut sim, Input::Timeout); // stored, queued
    step(&mut sim, Input::Timeout); // the first batch out
    assert!(!sim.engine.fanout.is_empty());
    let dropped = sim.engine.stats.dropped_datagrams;
    let stranger = udp(9);
    step(
        &mut sim,
        Input::Datagram {
            from: stranger,
            bytes: b"PING 00000000000000000000000000000000",
        },
    );
    step(
        &mut sim,
        Input::Datagram {
            from: stranger,
            bytes: b"REGISTER junk",
        },
    );
    assert_eq!(sim.engine.stats.dropped_datagrams, dropped + 2);
    assert!(sim.engine.parked.is_empty());
    // A forged ACK is parked (it looks like one), then dropped when handled:
    // it counts nothing.
    let victim = udp(10001);
    let t = ack(&mut sim, stranger, &tokens[&victim], 1);
    assert_eq!(t.stored, 0);
    sim.settle();
    assert!(sim.engine.parked.is_empty());
    assert_eq!(sim.engine.stats.dropped_datagrams, dropped + 3);
    assert!(sim.stored_deliveries.is_empty());
}

/// In a burst (a second broadcast queued behind the first) ACKs are handled
/// as they come: they free the window room the queued sends wait for.
#[test]
fn in_a_burst_acks_are_handled_as_they_come() {
    let (mut sim, a, tokens) = many_on_udp(2 * FANOUT_BATCH + 10);
    start_broadcast(&mut sim, a);
    step(&mut sim, Input::Timeout); // the first stored, queued
    start_broadcast(&mut sim, a);
    step(&mut sim, Input::Timeout); // the second stored; the first's batch out
    let t = step(&mut sim, Input::Timeout);
    assert_eq!(sim.engine.fanout.len(), 2);
    let to = t.bcasts[0];
    assert_eq!(ack(&mut sim, to, &tokens[&to], 1).stored, 1);
    assert!(sim.engine.parked.is_empty());
}
