//! The body of the `mesh` fuzz target and the invariants it checks.

use super::{Mesh, Tag};
use mitogen_core::{ContextId, Handle, Message, Policy};
use std::collections::HashMap;

/// The body of the `mesh` fuzz target: runs the operations `data` encodes
/// (spawn, kill, listen, send with any ids, call-like requests, large
/// messages that are split on the wire, readers that stall and resume,
/// drive) on a mesh and checks, after each, that:
/// - every message delivered to a listener came from a node on the tree
///   path to its `src_id` and to its `auth_id`, or from above the receiver
///   (whose ids it reaches through its parent): no forged source passes;
/// - nothing reached a listener its policy refuses (checked against the
///   mesh's own topology, not the core's tables);
/// - every message delivered to a listener arrived whole, whatever the
///   fragments and pipe stalls it went through;
/// - after driving, no live node still waits on a dead one;
/// - driving settles (no message loops), and once every reader reads again
///   no sender is still held and nothing is left queued.
///
/// Operation bytes 240 and up are the flow-control ones (large sends,
/// stalls), so inputs found before they existed still mean what they did.
///
/// # Panics
/// When an invariant does not hold.
pub fn fuzz_ops(data: &[u8]) {
    let mut mesh = Mesh::with_options(false, 4 << 20);
    mesh.step_limit = 200_000;
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    // Listener tag -> (node, policy kind).
    let mut listeners: Vec<(ContextId, Handle, Tag, u8)> = Vec::new();
    // Payload nonce -> the node that really sent it.
    let mut origin: HashMap<u64, ContextId> = HashMap::new();
    let mut nonce = 0u64;
    let mut checked = vec![0usize; 1];
    while let Some(op) = next() {
        let live: Vec<ContextId> = mesh.nodes().filter(|n| mesh.is_alive(*n)).collect();
        let pick = |b: Option<u8>| live[b.unwrap_or(0) as usize % live.len()];
        let any_id =
            |b: Option<u8>, n: usize| ContextId(u32::from(b.unwrap_or(0)) % (n as u32 + 2));
        match op {
            240..=247 if !listeners.is_empty() => {
                // A large message, split on the wire when over a fragment.
                let from = pick(next());
                let (_, h, _, _) = listeners[next().unwrap_or(0) as usize % listeners.len()];
                let dst = any_id(next(), mesh.nodes.len());
                let len = usize::from(next().unwrap_or(0)) * (8 << 10) + usize::from(op - 240);
                nonce += 1;
                origin.insert(nonce, from);
                let mut data = nonce.to_be_bytes().to_vec();
                data.resize(8 + len, nonce as u8);
                mesh.send_stamped(from, Message::bytes(dst, h, data));
            }
            248..=255 => {
                // A reader stops or starts reading (either end of a link).
                let node = pick(next());
                if let Some(parent) = mesh.parent_of(node) {
                    let (a, b) = if op & 1 == 0 {
                        (parent, node)
                    } else {
                        (node, parent)
                    };
                    let on = mesh.pipe(a, b).is_some_and(|p| !p.stalled);
                    mesh.stall(a, b, on);
                }
            }
            _ => match op % 6 {
                0 if mesh.nodes.len() < 16 => {
                    let parent = pick(next());
                    mesh.spawn(parent);
                }
                1 => {
                    let victim = pick(next());
                    mesh.kill(victim);
                }
                2 => {
                    let node = pick(next());
                    let kind = next().unwrap_or(0) % 3;
                    let policy = match kind {
                        0 => Policy::Any,
                        1 => Policy::ParentAuthority,
                        _ => Policy::ImmediateChild,
                    };
                    let (h, tag) = mesh.listen(node, policy, None);
                    listeners.push((node, h, tag, kind));
                }
                3 | 4 if !listeners.is_empty() => {
                    let from = pick(next());
                    let (_, h, _, _) = listeners[next().unwrap_or(0) as usize % listeners.len()];
                    let n = mesh.nodes.len();
                    let dst = any_id(next(), n);
                    nonce += 1;
                    origin.insert(nonce, from);
                    let mut m = Message::bytes(dst, h, nonce.to_be_bytes().to_vec());
                    if op % 6 == 3 {
                        // Any source fields: forgeries included.
                        m.src_id = any_id(next(), n);
                        m.auth_id = any_id(next(), n);
                        mesh.send(from, m);
                    } else if mesh.is_alive(dst) {
                        // A call-like request that waits on `dst`.
                        let (reply, _) = mesh.listen(from, Policy::Respondent(dst), Some(dst));
                        m.reply_to = reply;
                        mesh.send_stamped(from, m);
                    }
                }
                _ => {
                    mesh.drive();
                    // A loss is announced by messages: behind a stalled
                    // reader they wait, as they do on a socket.
                    if !mesh.pipes.iter().any(|p| p.open && p.stalled) {
                        check_no_waits_on_the_dead(&mesh);
                    }
                }
            },
        }
        check_deliveries(&mesh, &listeners, &origin, &mut checked);
    }
    for p in &mut mesh.pipes {
        p.stalled = false;
    }
    mesh.drive();
    check_deliveries(&mesh, &listeners, &origin, &mut checked);
    check_no_waits_on_the_dead(&mesh);
    for p in mesh.pipes.iter().filter(|p| p.open) {
        assert!(
            p.held.is_empty() && p.out.is_empty() && p.wire.is_empty(),
            "{} -> {}: {} held, {} B queued, {} B in flight after every reader drained",
            p.from,
            p.to,
            p.held.len(),
            p.out.pending(),
            p.wire.len()
        );
    }
}

fn check_deliveries(
    mesh: &Mesh,
    listeners: &[(ContextId, Handle, Tag, u8)],
    origin: &HashMap<u64, ContextId>,
    checked: &mut Vec<usize>,
) {
    checked.resize(mesh.nodes.len(), 0);
    for r in mesh.nodes() {
        let inbox = mesh.inbox(r);
        for d in &inbox[checked[r.0 as usize]..] {
            let Some(&(_, _, _, kind)) = listeners.iter().find(|l| l.0 == r && l.2 == d.tag) else {
                continue; // a reply listener
            };
            let nonce = d
                .msg
                .data
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok());
            let nonce = nonce.map(u64::from_be_bytes);
            let Some((n, &o)) = nonce.and_then(|n| Some((n, origin.get(&n)?))) else {
                continue; // a dead notice, made by a router
            };
            let filler = vec![n as u8; d.msg.data.len() - 8];
            assert!(
                d.msg.data[8..] == filler[..],
                "{r} got a damaged payload: {:?}",
                d.msg
            );
            if o != r {
                for claimed in [d.msg.src_id, d.msg.auth_id] {
                    // The reverse-path rule: an id a router does not know
                    // (never spawned, dead, or spawned so recently that its
                    // route is still on its way up) is reached through the
                    // parent, so whatever is above the receiver may claim
                    // it. Below and beside the receiver, only the path to
                    // the claimed context can.
                    let toward = if mesh.path(r, ContextId(0)).contains(&o) {
                        ContextId(0)
                    } else {
                        claimed
                    };
                    assert!(
                        mesh.path(r, toward).contains(&o),
                        "{r} accepted a message from {o} claiming {claimed}: {:?}",
                        d.msg
                    );
                }
            }
            let mut ancestors = Vec::new();
            let mut p = mesh.parent_of(r);
            while let Some(a) = p {
                ancestors.push(a);
                p = mesh.parent_of(a);
            }
            match kind {
                1 => assert!(
                    d.msg.auth_id == r || ancestors.contains(&d.msg.auth_id),
                    "{r} let {:?} through a parent-authority policy",
                    d.msg
                ),
                2 => assert!(
                    mesh.parent_of(d.msg.src_id) == Some(r) && o != r,
                    "{r} let {:?} through an immediate-child policy",
                    d.msg
                ),
                _ => {}
            }
        }
        checked[r.0 as usize] = inbox.len();
    }
}

fn check_no_waits_on_the_dead(mesh: &Mesh) {
    for n in mesh.nodes() {
        let Some(core) = mesh.core(n) else { continue };
        for (h, handler) in core.handlers() {
            if let Some(x) = handler.respondent {
                assert!(
                    mesh.is_alive(x),
                    "{n} still waits (handle {h}) on {x}, which is dead"
                );
            }
        }
    }
}
