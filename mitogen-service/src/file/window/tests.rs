use super::Window;
use crate::file::{CHUNK, MAX_WINDOW, MIN_WINDOW};
use std::time::{Duration, Instant};

const C: u64 = CHUNK as u64;

fn fill(w: &mut Window, now: Instant) {
    while w.may_send() {
        w.on_sent(C, now);
    }
}

#[test]
fn starts_at_the_minimum_and_stops_there() {
    let t0 = Instant::now();
    let mut w = Window::new(t0);
    fill(&mut w, t0);
    assert_eq!(w.sent(), MIN_WINDOW);
    assert!(!w.may_send());
}

#[test]
fn grows_on_a_fast_long_link_up_to_the_maximum() {
    let t0 = Instant::now();
    let mut w = Window::new(t0);
    let mut now = t0;
    for _ in 0..50 {
        fill(&mut w, now);
        // A whole window acknowledged 10 ms later: 200 MiB/s at 10 ms RTT
        // wants 4 MiB; then more, until the cap.
        now += Duration::from_millis(10);
        assert!(w.on_ack(w.sent(), now));
    }
    assert_eq!(w.limit(), MAX_WINDOW);
}

#[test]
fn never_shrinks_and_ignores_bad_acks() {
    let t0 = Instant::now();
    let mut w = Window::new(t0);
    fill(&mut w, t0);
    let sent = w.sent();
    assert!(!w.on_ack(sent + 1, t0), "beyond what was sent");
    // A very slow round trip asks for less than the minimum: it stays.
    assert!(w.on_ack(C, t0 + Duration::from_secs(100)));
    assert_eq!(w.limit(), MIN_WINDOW);
    assert!(!w.on_ack(C, t0 + Duration::from_secs(101)), "stale");
    assert!(!w.on_ack(0, t0 + Duration::from_secs(101)), "stale");
    assert_eq!(w.acked(), C);
    assert!(w.may_send());
}
