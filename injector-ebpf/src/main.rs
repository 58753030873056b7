//! injector's kernel programs. One entry point per attach point; all share `verdict::judge`.
//! Built for bpfel-unknown-none by injector/build.rs; on the host it compiles to an empty binary.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

mod maps;
mod parse;
mod verdict;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use injector_common::Hook;
use verdict::{Verdict, judge};

#[inline(always)]
fn tc(ctx: &TcContext, hook: Hook) -> i32 {
    match judge(ctx, ctx.len(), hook) {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Drop => TC_ACT_SHOT,
    }
}

/// TC ingress. On a host veth: what the pod sends.
#[classifier]
pub fn tc_ingress(ctx: TcContext) -> i32 {
    tc(&ctx, Hook::TcIngress)
}

/// TC egress. On a host veth: what the pod receives.
#[classifier]
pub fn tc_egress(ctx: TcContext) -> i32 {
    tc(&ctx, Hook::TcEgress)
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
