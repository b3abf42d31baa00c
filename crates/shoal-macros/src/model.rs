//! Reads and checks the annotated trait into a [`Service`]: every rule a service trait must
//! follow is enforced here, with an error spanned to the token at fault.

use std::collections::HashMap;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, Ident, ItemTrait, LitStr, Pat, Path, PathArguments, ReturnType, Signature,
    TraitItem, TraitItemFn, Type,
};

/// Names the generated client defines itself; a service method may not reuse them.
const CLIENT_OWN_METHODS: &[&str] = &["new", "with_timeout", "with_key", "client"];

/// Prefix of the names the server answers itself (`shoal.ping`, ...).
const RESERVED_PREFIX: &str = "shoal.";

/// The attribute's own arguments: `#[shoal::service(crate = "path")]`.
pub struct Options {
    /// Root of the facade crate in generated paths.
    pub root: Path,
}

impl Options {
    pub fn parse(attr: TokenStream) -> syn::Result<Options> {
        let mut root: Path = syn::parse_quote!(::shoal);
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("crate") {
                let lit: LitStr = meta.value()?.parse()?;
                root = lit.parse()?;
                Ok(())
            } else {
                Err(meta.error("unknown argument; the only one is `crate = \"path::to::shoal\"`"))
            }
        });
        syn::parse::Parser::parse2(parser, attr)?;
        Ok(Options { root })
    }
}

/// A checked service trait.
pub struct Service {
    /// The trait as written, minus the `#[shoal(...)]` attributes.
    pub item: ItemTrait,
    pub methods: Vec<Method>,
}

/// One method of the service.
pub struct Method {
    pub ident: Ident,
    /// The name on the wire: the Rust name, or the one given with `#[shoal(name = "...")]`.
    pub wire_name: String,
    /// Where the wire name comes from: the rename's literal, or the method's name.
    pub name_span: Span,
    /// `#[doc]` attributes, repeated on the client method.
    pub docs: Vec<Attribute>,
    pub params: Vec<Param>,
    pub returns: Returns,
    pub flags: Flags,
}

/// A parameter as the server sees it.
pub enum Param {
    /// `&Context`: supplied by the server, not sent on the wire.
    Context,
    /// A positional argument on the wire.
    Wire { ident: Ident, ty: Box<Type> },
}

/// What a method returns.
pub enum Returns {
    Unit,
    Value(Box<Type>),
    /// `...Result<T, E>`: `Ok(T)` is the reply, `Err(E)` the error reply.
    Result {
        ty: Box<Type>,
        ok: Box<Type>,
    },
}

/// The `#[shoal(...)]` switches of one method.
#[derive(Default, Clone, Copy)]
pub struct Flags {
    pub notify: bool,
    pub blocking: bool,
    pub idempotent: bool,
}

impl Method {
    pub fn wire_params(&self) -> impl Iterator<Item = (&Ident, &Type)> {
        self.params.iter().filter_map(|p| match p {
            Param::Wire { ident, ty } => Some((ident, &**ty)),
            Param::Context => None,
        })
    }

    pub fn takes_context(&self) -> bool {
        self.params.iter().any(|p| matches!(p, Param::Context))
    }
}

impl Returns {
    /// The type as written; `None` for `()`, written or not.
    pub fn written(&self) -> Option<&Type> {
        match self {
            Returns::Unit => None,
            Returns::Value(ty) | Returns::Result { ty, .. } => Some(&**ty),
        }
    }
}

impl Service {
    /// Checks `item` and strips the `#[shoal(...)]` attributes from it.
    pub fn parse(mut item: ItemTrait) -> syn::Result<Service> {
        let mut errors = Errors::default();
        if let Some(generics) = generics_tokens(&item.generics) {
            errors.at(
                generics,
                "a shoal service trait cannot be generic: every call is decoded into concrete types",
            );
        }
        if let Some(unsafety) = &item.unsafety {
            errors.at(unsafety, "a shoal service trait cannot be `unsafe`");
        }
        if let Some(auto) = &item.auto_token {
            errors.at(auto, "a shoal service trait cannot be an auto trait");
        }

        let mut methods = Vec::new();
        let mut seen: HashMap<String, Ident> = HashMap::new();
        for trait_item in &mut item.items {
            let TraitItem::Fn(func) = trait_item else {
                errors.at(
                    &*trait_item,
                    "a shoal service trait holds only methods; move this item elsewhere",
                );
                continue;
            };
            let method = match Method::parse(func) {
                Ok(method) => method,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            if let Some(first) = seen.get(&method.wire_name) {
                errors.push(syn::Error::new(
                    method.name_span,
                    format!(
                        "methods `{first}` and `{}` both answer to `{}` on the wire; give one \
                         another name with #[shoal(name = \"...\")]",
                        method.ident, method.wire_name
                    ),
                ));
            } else {
                seen.insert(method.wire_name.clone(), method.ident.clone());
            }
            methods.push(method);
        }
        errors.finish()?;
        Ok(Service { item, methods })
    }
}

impl Method {
    /// Reads one method and removes its `#[shoal(...)]` attributes.
    fn parse(func: &mut TraitItemFn) -> syn::Result<Method> {
        let mut errors = Errors::default();
        let (flags, rename) = match take_shoal_attrs(&mut func.attrs) {
            Ok(found) => found,
            Err(e) => {
                errors.push(e);
                (Flags::default(), None)
            }
        };
        let sig = &func.sig;
        check_signature(sig, flags, &mut errors);
        let params = params(sig, &mut errors);
        let returns = match &sig.output {
            ReturnType::Default => Returns::Unit,
            ReturnType::Type(_, ty) => returns(ty).unwrap_or_else(|e| {
                errors.push(e);
                Returns::Value(ty.clone())
            }),
        };
        if flags.notify && !matches!(returns, Returns::Unit) {
            errors.at(
                &sig.output,
                "a #[shoal(notify)] method is one-way and gets no reply: it must return `()`",
            );
        }
        if let Some(Type::ImplTrait(t)) = returns.written() {
            errors.at(
                t,
                "a shoal service method returns a concrete type, not `impl Trait`",
            );
        }
        let ident = sig.ident.clone();
        let name_span = rename.as_ref().map_or(ident.span(), LitStr::span);
        let wire_name = wire_name(&ident, rename, &mut errors);

        errors.finish()?;
        let docs = func
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect();
        Ok(Method {
            ident,
            wire_name,
            name_span,
            docs,
            params,
            returns,
            flags,
        })
    }
}

/// Everything about a signature but its parameters' and return types.
fn check_signature(sig: &Signature, flags: Flags, errors: &mut Errors) {
    let ident = &sig.ident;
    if let Some(generics) = generics_tokens(&sig.generics) {
        errors.at(
            generics,
            "a shoal service method cannot be generic: its arguments are decoded into concrete \
             types",
        );
    }
    if let Some(constness) = &sig.constness {
        errors.at(constness, "a shoal service method cannot be `const`");
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.at(unsafety, "a shoal service method cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.at(abi, "a shoal service method cannot have an `extern` ABI");
    }
    if let Some(variadic) = &sig.variadic {
        errors.at(variadic, "a shoal service method cannot be variadic");
    }
    match (&sig.asyncness, flags.blocking) {
        (Some(asyncness), true) => errors.at(
            asyncness,
            "a #[shoal(blocking)] method runs on the blocking pool and must be a plain `fn`; \
             remove `async` or remove `blocking`",
        ),
        (None, false) => errors.at(
            sig.fn_token,
            format!(
                "method `{ident}` is not async: make it `async fn`, or mark it \
                 #[shoal(blocking)] to run it on the blocking pool"
            ),
        ),
        _ => {}
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(recv)) if recv.reference.is_some() && recv.mutability.is_none() => {}
        Some(FnArg::Receiver(recv)) => errors.at(
            recv,
            "a shoal service method takes `&self`: the server shares one implementation between \
             concurrent calls",
        ),
        _ => errors.at(
            ident,
            format!(
                "method `{ident}` needs a `&self` receiver: a shoal service method is called on \
                 the shared implementation"
            ),
        ),
    }
}

/// The parameters after the receiver.
fn params(sig: &Signature, errors: &mut Errors) -> Vec<Param> {
    let mut params = Vec::new();
    for input in &sig.inputs {
        let FnArg::Typed(arg) = input else { continue };
        match context_param(&arg.ty) {
            ContextParam::Shared => {
                if params.iter().any(|p| matches!(p, Param::Context)) {
                    errors.at(&arg.ty, "a method takes at most one `&Context` parameter");
                }
                params.push(Param::Context);
                continue;
            }
            ContextParam::Mutable => {
                errors.at(&arg.ty, "take the context by shared reference: `&Context`");
                continue;
            }
            ContextParam::No => {}
        }
        let ident = match &*arg.pat {
            Pat::Ident(pat) if pat.by_ref.is_none() && pat.subpat.is_none() => pat.ident.clone(),
            other => {
                errors.at(
                    other,
                    "a shoal service parameter must be a plain name such as `point: Point`; its \
                     name labels the argument in error messages",
                );
                continue;
            }
        };
        match &*arg.ty {
            Type::Reference(r) => errors.at(
                r,
                "a wire parameter is decoded into an owned value: take it by value (`String` \
                 rather than `&str`); only `&Context` may be borrowed",
            ),
            Type::ImplTrait(t) => errors.at(
                t,
                "a wire parameter needs a concrete type to be decoded into, not `impl Trait`",
            ),
            _ => {}
        }
        params.push(Param::Wire {
            ident,
            ty: arg.ty.clone(),
        });
    }
    params
}

/// The method's name on the wire, checked: `rename` when given, else the Rust name.
fn wire_name(ident: &Ident, rename: Option<LitStr>, errors: &mut Errors) -> String {
    let rust_name = ident.unraw().to_string();
    let wire_name = match rename {
        Some(lit) => {
            let name = lit.value();
            if name.is_empty() {
                errors.at(&lit, "the wire name cannot be empty");
            } else if name.starts_with(RESERVED_PREFIX) {
                errors.at(
                    &lit,
                    format!(
                        "wire name `{name}` uses the prefix `{RESERVED_PREFIX}`, reserved for the \
                         methods every shoal server answers itself"
                    ),
                );
            }
            name
        }
        None => rust_name.clone(),
    };
    if CLIENT_OWN_METHODS.contains(&rust_name.as_str()) {
        errors.at(
            ident,
            format!(
                "method name `{rust_name}` clashes with the generated client's own \
                 `{rust_name}`; name the Rust method differently and keep the wire name with \
                 #[shoal(name = \"{wire_name}\")]"
            ),
        );
    }
    wire_name
}

/// Collects every error found instead of stopping at the first.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// An error covering `tokens`, first to last.
    fn at(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Removes every `#[shoal(...)]` from `attrs` and reads its switches and rename.
fn take_shoal_attrs(attrs: &mut Vec<Attribute>) -> syn::Result<(Flags, Option<LitStr>)> {
    let mut flags = Flags::default();
    let mut rename: Option<LitStr> = None;
    let mut errors = Errors::default();
    let mut seen: Vec<String> = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("shoal")) {
        let parsed =
            attr.parse_nested_meta(|meta| {
                let key = meta
                    .path
                    .get_ident()
                    .map(Ident::to_string)
                    .unwrap_or_default();
                if seen.contains(&key) {
                    return Err(meta.error(format!("`{key}` is given twice")));
                }
                match key.as_str() {
                    "notify" => flags.notify = true,
                    "blocking" => flags.blocking = true,
                    "idempotent" => flags.idempotent = true,
                    "name" => rename = Some(meta.value()?.parse()?),
                    _ => return Err(meta.error(
                        "unknown shoal method attribute; expected one of `notify`, `blocking`, \
                         `idempotent`, `name = \"...\"`",
                    )),
                }
                seen.push(key);
                Ok(())
            });
        if let Err(e) = parsed {
            errors.push(e);
        }
    }
    attrs.retain(|a| !a.path().is_ident("shoal"));
    errors.finish()?;
    Ok((flags, rename))
}

enum ContextParam {
    No,
    Shared,
    Mutable,
}

/// Whether `ty` is a borrowed `Context` (any path ending in `Context`).
fn context_param(ty: &Type) -> ContextParam {
    let Type::Reference(r) = ty else {
        return ContextParam::No;
    };
    let Type::Path(p) = &*r.elem else {
        return ContextParam::No;
    };
    if p.qself.is_some() {
        return ContextParam::No;
    }
    match p.path.segments.last() {
        Some(last) if last.ident == "Context" && last.arguments.is_none() => match r.mutability {
            Some(_) => ContextParam::Mutable,
            None => ContextParam::Shared,
        },
        _ => ContextParam::No,
    }
}

/// Classifies a written return type; `Result<T, ..>` (by its last path segment) is a fallible
/// method whose `Ok` type is `T`.
fn returns(ty: &Type) -> syn::Result<Returns> {
    if let Type::Tuple(t) = ty {
        if t.elems.is_empty() {
            return Ok(Returns::Unit);
        }
    }
    let Type::Path(p) = ty else {
        return Ok(Returns::Value(Box::new(ty.clone())));
    };
    let Some(last) = p.path.segments.last() else {
        return Ok(Returns::Value(Box::new(ty.clone())));
    };
    if p.qself.is_some() || last.ident != "Result" {
        return Ok(Returns::Value(Box::new(ty.clone())));
    }
    let ok = match &last.arguments {
        PathArguments::AngleBracketed(args) => args.args.iter().find_map(|arg| match arg {
            syn::GenericArgument::Type(t) => Some(t.clone()),
            _ => None,
        }),
        _ => None,
    };
    match ok {
        Some(ok) => Ok(Returns::Result {
            ty: Box::new(ty.clone()),
            ok: Box::new(ok),
        }),
        None => Err(syn::Error::new(
            last.span(),
            "cannot see the success type of this `Result`; write it out as `Result<T, E>`",
        )),
    }
}

/// The tokens to point at when `generics` declares anything: its parameters, else its
/// `where` clause.
fn generics_tokens(generics: &syn::Generics) -> Option<TokenStream> {
    if !generics.params.is_empty() {
        Some(generics.to_token_stream())
    } else {
        generics
            .where_clause
            .as_ref()
            .map(ToTokens::to_token_stream)
    }
}
