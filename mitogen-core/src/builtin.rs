//! Functions and methods every registry has.

use crate::call::{CallCx, FnError, Function, Registry};
use crate::ids::{ContextId, Handle};
use crate::message::Message;
use std::sync::atomic::Ordering;

/// Name of the built-in that clears a chain's failure (handled by the executor).
pub(crate) const FORGET_CHAIN: &str = "mitogen::forget_chain";

pub(crate) fn register(reg: &mut Registry) {
    reg.add::<ProxyConnect>();
    reg.add::<Detach>();
    reg.add::<ForgetChain>();
    reg.add_method::<crate::transport::local::Local>();
}

/// Connects onward from the called context: how `via` works.
pub(crate) struct ProxyConnect;
impl Function for ProxyConnect {
    const NAME: &'static str = "mitogen::connect";
    /// Method name and its postcard-encoded options.
    type Args = (String, Vec<u8>);
    type Output = (ContextId, String);
    fn call(cx: &CallCx<'_>, (method, opts): Self::Args) -> Result<Self::Output, FnError> {
        let router = cx.router();
        let thunk = router
            .registry()
            .method(&method)
            .ok_or_else(|| crate::ConnectError::UnknownMethod(method.clone()))?;
        let ctx = thunk(router, &opts)?;
        // The context outlives this call: its stream is owned by the broker.
        Ok((ctx.id(), ctx.name().to_owned()))
    }
}

/// Marks the called context detached and tells its parent.
pub(crate) struct Detach;
impl Function for Detach {
    const NAME: &'static str = "mitogen::detach";
    type Args = ();
    type Output = ();
    fn call(cx: &CallCx<'_>, (): ()) -> Result<(), FnError> {
        let router = cx.router();
        router.node.detached.store(true, Ordering::Release);
        if let Some(parent) = router.parent_id() {
            router
                .node
                .send_stamped(Message::bytes(parent, Handle::DETACHING, Vec::new()));
        }
        Ok(())
    }
}

/// Clears a call chain's recorded failure (see [`crate::CallChain::reset`]).
pub(crate) struct ForgetChain;
impl Function for ForgetChain {
    const NAME: &'static str = FORGET_CHAIN;
    type Args = ();
    type Output = ();
    fn call(_cx: &CallCx<'_>, (): ()) -> Result<(), FnError> {
        Ok(())
    }
}
