//! Clones a judging program sends through the device it judges at (a delayed packet handed to
//! fq, a duplicate) and how it recognises them when they meet it again: a per-CPU token.

use aya_ebpf::{
    bindings::TC_ACT_OK, helpers::bpf_redirect, macros::map, maps::PerCpuArray, programs::TcContext,
};
use injector_common::ctrl;

use crate::verdict::ctrl_word;

/// The verdict for the original of a packet handed to fq as a clone: freed, with a local sender
/// told NET_XMIT_SUCCESS. Not SHOT: from the egress hook SHOT is reported to a local sender as
/// NET_XMIT_DROP (TCP then enters CWR and treats the segment as not sent; see `hand_to_fq`). Not
/// STOLEN either, though it does exactly this on a netlink clsact hook: on TCX (6.6+) STOLEN is no
/// verdict, `tcx_action_code` reads it as TCX_NEXT and the original passes too (every handed-over
/// packet was sent twice: ping's DUP! in the 6.12 VM). A redirect to ifindex 0 does it on both
/// paths and every kernel line: `skb_do_redirect` finds no device and frees the skb, and the
/// hook answers a redirect with NET_XMIT_SUCCESS.
#[inline(always)]
fn original_handed_over() -> i32 {
    // SAFETY: a helper call with plain arguments; it only records the target for the kernel.
    unsafe { bpf_redirect(0, 0) as i32 }
}

/// Per CPU: the clone `send` is sending right now, as `IN_FLIGHT | ifindex << 32 | bits`
/// (`bits`: the mark bits it added), 0 otherwise. `bpf_clone_redirect` to an egress device
/// transmits synchronously (`__bpf_tx_skb` -> `dev_queue_xmit`, same CPU, bottom halves off), so
/// the clone meets this device's egress program while the token is set; nothing else can run
/// that program on this CPU in between. This identifies our clone exactly, whatever its mark:
/// a foreign packet that carries the clone-mark bit is judged like any other and keeps its mark.
#[map]
static CLONE_TOKEN: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);
const IN_FLIGHT: u64 = 1 << 63;

/// Sends a clone of the packet to this device's egress, where the judging program lets it pass
/// unjudged (`is_our_clone`). While the clone is on its way it carries the `CTRL[CLONE_MARK]`
/// bit (if set and not already on the packet), a label for hooks ahead of ours; the bit is
/// removed when it passes here. False if no clone could be made.
#[inline(always)]
pub fn send(ctx: &TcContext) -> bool {
    let skb = ctx.skb.skb;
    // SAFETY: reading context fields of our own skb.
    let (ifindex, mark) = unsafe { ((*skb).ifindex, (*skb).mark) };
    let Some(token) = CLONE_TOKEN.get_ptr_mut(0) else {
        return false;
    };
    let added = (ctrl_word(ctrl::CLONE_MARK) as u32) & !mark;
    // SAFETY: this CPU's slot; only this CPU touches it, and not concurrently (see CLONE_TOKEN).
    unsafe { *token = IN_FLIGHT | (u64::from(ifindex) << 32) | u64::from(added) };
    if added != 0 {
        ctx.set_mark(mark | added);
    }
    let cloned = ctx.clone_redirect(ifindex, 0).is_ok();
    // SAFETY: as above.
    unsafe { *token = 0 };
    if added != 0 {
        ctx.set_mark(mark);
    }
    cloned
}

/// A stamped packet that still belongs to a local socket (same-node traffic through the bridge
/// keeps its sender's socket) must not wait in fq as it is: TCP small queues would see its bytes
/// in flight for the whole delay and throttle the connection to ~1 Mbit/s. A clone carries no
/// socket: it goes to this device's egress again (fq holds it), and the original is freed, which
/// returns its bytes to the sender at once. The original is consumed as success: for the node's own
/// traffic (node -> pod across flannel.1) this hook runs inside the sender's `dev_queue_xmit`,
/// and SHOT would come back to TCP as a local drop (`tcp_enter_cwr`, segment not sent, the
/// clone's data then acked as unsent).
#[inline(always)]
pub fn hand_to_fq(ctx: &TcContext) -> i32 {
    // SAFETY: reading a context field of our own skb.
    let has_sk = unsafe { !(*ctx.skb.skb).__bindgen_anon_2.sk.is_null() };
    // If the clone could not be made, the original goes on, stamped (delayed, TCP throttled).
    if has_sk && send(ctx) {
        original_handed_over()
    } else {
        TC_ACT_OK
    }
}

/// The clone `send` is sending right now, back at this egress: take the token, remove the
/// mark bits it added (a bit the packet carried before stays), let it through.
#[inline(always)]
pub fn is_our_clone(ctx: &TcContext) -> bool {
    let Some(token) = CLONE_TOKEN.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot (see CLONE_TOKEN); reading context fields.
    let (t, ifindex, mark) = unsafe { (*token, (*ctx.skb.skb).ifindex, (*ctx.skb.skb).mark) };
    if t & IN_FLIGHT == 0 || (t >> 32) as u32 & 0x7FFF_FFFF != ifindex {
        return false;
    }
    // SAFETY: as above. One clone per token.
    unsafe { *token = 0 };
    let added = t as u32;
    if added != 0 {
        ctx.set_mark(mark & !added);
    }
    true
}
