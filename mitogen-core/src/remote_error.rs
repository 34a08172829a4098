//! Errors as values that survive hops.
//!
//! A function's error is a Rust value in the context it ran in. To cross the
//! wire it becomes a [`RemoteError`]: the error's text, the text of each of
//! its sources, and, when the error or one of its sources is a type a layer
//! registered with [`crate::Registry::add_error`], that value itself,
//! serialised under the type's [`ErrorType::CODE`]. The receiving side
//! decodes it again with its own registry (same binary, same registration),
//! so the typed value is back in the source chain:
//!
//! ```text
//! agent: Err(ConnectError::Method { source: AuthError::WrongPassword })
//!   └─► RemoteError { message, chain: [..], code: "mitogen-ssh/auth", detail: postcard(AuthError) }
//!        ─ wire, any number of hops ─►
//! caller: CallError ─source─► CallErrorKind::Failed ─source─► RemoteError ─source─► AuthError
//! ```
//!
//! [`find_source`] (and `CallError::downcast_ref`, `ConnectError::downcast_ref`)
//! walk that chain. A function that calls onward and returns the
//! [`crate::CallError`] it got keeps the typed value for its own caller: the
//! chain is walked and re-encoded at every hop.
//!
//! [`error_chain`] is the one formatter for an error and its sources, used
//! for every text an error is flattened to (function failures, service
//! failures, examples printing errors).

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::sync::Arc;

/// An error type whose values keep their type across hops.
///
/// Implement it for a layer's error and register it on both ends with
/// [`crate::Registry::add_error`]:
///
/// ```
/// use mitogen_core::ErrorType;
///
/// #[derive(Debug, serde::Serialize, serde::Deserialize, thiserror::Error)]
/// #[error("quota exceeded: {used} of {limit} bytes")]
/// pub struct QuotaError { used: u64, limit: u64 }
///
/// impl ErrorType for QuotaError {
///     const CODE: &'static str = "example/quota";
/// }
///
/// let reg = mitogen_core::Registry::new(|reg| {
///     reg.add_error::<QuotaError>();
/// });
/// # let _ = reg;
/// ```
pub trait ErrorType: StdError + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Names the type on the wire; unique across layers (`"<crate>/<what>"`).
    const CODE: &'static str;
}

type Encode = fn(&(dyn StdError + 'static)) -> Option<Vec<u8>>;
type Decode = fn(&[u8]) -> Option<Arc<dyn StdError + Send + Sync>>;

/// The registered error types of a registry, by code.
#[derive(Default)]
pub(crate) struct ErrorTypes {
    by_code: BTreeMap<&'static str, (Encode, Decode)>,
}

impl ErrorTypes {
    pub(crate) fn add<T: ErrorType>(&mut self) {
        let encode: Encode = |e| {
            e.downcast_ref::<T>()
                .and_then(|t| postcard::to_stdvec(t).ok())
        };
        let decode: Decode = |b| {
            postcard::from_bytes::<T>(b)
                .ok()
                .map(|t| Arc::new(t) as Arc<dyn StdError + Send + Sync>)
        };
        self.by_code.insert(T::CODE, (encode, decode));
    }

    pub(crate) fn codes(&self) -> impl Iterator<Item = &&'static str> {
        self.by_code.keys()
    }

    /// The first error in `e`'s chain (outermost first) of a registered type.
    fn encode(&self, e: &(dyn StdError + 'static)) -> Option<(String, Vec<u8>)> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            // An error that already crossed a hop carries its typed value.
            if let Some(re) = err.downcast_ref::<RemoteError>() {
                if let Some(code) = &re.0.code {
                    return Some((code.clone(), re.0.detail.clone()));
                }
            }
            for (code, (enc, _)) in &self.by_code {
                if let Some(bytes) = enc(err) {
                    return Some(((*code).to_owned(), bytes));
                }
            }
            cur = err.source();
        }
        None
    }

    /// Rebuilds the typed value of `re` (if its type is registered here).
    pub(crate) fn revive(&self, re: &mut RemoteError) {
        if re.0.typed.is_some() {
            return;
        }
        if let Some((_, dec)) = re.0.code.as_deref().and_then(|c| self.by_code.get(c)) {
            re.0.typed = dec(&re.0.detail);
        }
    }
}

/// A failure from another context, as a value: its text, its sources' text,
/// and (for registered [`ErrorType`]s) the typed error itself, reachable
/// through [`std::error::Error::source`].
///
/// One pointer wide: errors stay small in `Result`s however much they carry.
#[derive(Clone, Serialize, Deserialize)]
pub struct RemoteError(Box<Inner>);

#[derive(Clone, Serialize, Deserialize)]
struct Inner {
    message: String,
    chain: Vec<String>,
    code: Option<String>,
    detail: Vec<u8>,
    #[serde(skip)]
    typed: Option<Arc<dyn StdError + Send + Sync>>,
}

impl RemoteError {
    /// A plain error with only a message.
    pub fn msg(message: impl Into<String>) -> Self {
        Self(Box::new(Inner {
            message: message.into(),
            chain: Vec::new(),
            code: None,
            detail: Vec::new(),
            typed: None,
        }))
    }

    /// An error carrying a typed value (its text is the value's `Display`).
    pub fn typed<T: ErrorType>(value: T) -> Self {
        let mut chain = Vec::new();
        push_sources(&value, &mut chain);
        Self(Box::new(Inner {
            message: value.to_string(),
            chain,
            code: Some(T::CODE.to_owned()),
            detail: postcard::to_stdvec(&value).unwrap_or_default(),
            typed: Some(Arc::new(value)),
        }))
    }

    /// Captures `e` and its sources; the first of a type in `types` is kept
    /// typed (`RemoteError::capture`, in `call.rs`, passes a registry's).
    pub(crate) fn capture_with(e: &(dyn StdError + 'static), types: &ErrorTypes) -> Self {
        let mut chain = Vec::new();
        push_sources(e, &mut chain);
        let (code, detail) = match types.encode(e) {
            Some((c, d)) => (Some(c), d),
            None => (None, Vec::new()),
        };
        let mut re = Self(Box::new(Inner {
            message: e.to_string(),
            chain,
            code,
            detail,
            typed: None,
        }));
        types.revive(&mut re);
        re
    }

    /// The error's own text (without its sources).
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The text of each source, outermost first.
    pub fn chain(&self) -> &[String] {
        &self.0.chain
    }

    /// The [`ErrorType::CODE`] of the typed value carried, if any.
    pub fn code(&self) -> Option<&str> {
        self.0.code.as_deref()
    }

    /// The typed value, if it is a `T` (the type must be registered on this
    /// side too).
    pub fn downcast_ref<T: StdError + 'static>(&self) -> Option<&T> {
        self.0.typed.as_deref().and_then(|t| find_source::<T>(t))
    }
}

fn push_sources(e: &(dyn StdError + 'static), out: &mut Vec<String>) {
    let mut src = e.source();
    while let Some(s) = src {
        out.push(s.to_string());
        src = s.source();
    }
}

impl std::fmt::Debug for RemoteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteError")
            .field("message", &self.0.message)
            .field("chain", &self.0.chain)
            .field("code", &self.0.code)
            .finish()
    }
}

impl std::fmt::Display for RemoteError {
    /// The message, then each source not already part of the text before it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = self.0.message.clone();
        for s in &self.0.chain {
            append_cause(&mut text, s);
        }
        f.write_str(&text)
    }
}

impl StdError for RemoteError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.0
            .typed
            .as_deref()
            .map(|t| t as &(dyn StdError + 'static))
    }
}

impl PartialEq for RemoteError {
    fn eq(&self, o: &Self) -> bool {
        (&self.0.message, &self.0.chain, &self.0.code, &self.0.detail)
            == (&o.0.message, &o.0.chain, &o.0.code, &o.0.detail)
    }
}
impl Eq for RemoteError {}

impl From<&str> for RemoteError {
    fn from(s: &str) -> Self {
        Self::msg(s)
    }
}
impl From<String> for RemoteError {
    fn from(s: String) -> Self {
        Self::msg(s)
    }
}

/// The first error of type `T` in `e`'s source chain (`e` itself included).
///
/// ```
/// use mitogen_core::find_source;
/// let io = std::io::Error::other("disk on fire");
/// assert!(find_source::<std::io::Error>(&io).is_some());
/// ```
pub fn find_source<'a, T: StdError + 'static>(e: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

/// An error and its sources as one line: `outer: cause: root cause`.
/// A source whose text the line already contains is not repeated (many
/// errors print their source themselves).
///
/// ```
/// let e = std::io::Error::other("disk on fire");
/// assert_eq!(mitogen_core::error_chain(&e), "disk on fire");
/// ```
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        append_cause(&mut s, &cause.to_string());
        src = cause.source();
    }
    s
}

fn append_cause(s: &mut String, cause: &str) {
    if !cause.is_empty() && !s.contains(cause) {
        s.push_str(": ");
        s.push_str(cause);
    }
}
