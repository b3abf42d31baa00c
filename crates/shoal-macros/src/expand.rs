//! Generates the code for a checked [`Service`]: the trait with `Send` futures, the
//! `<Trait>Server` dispatcher and the `<Trait>Client` stub.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{parse_quote, FnArg, Ident, Item, ItemTrait, Pat, Path, ReturnType, TraitItem};

use crate::model::{Method, Options, Param, Returns, Service};
use crate::type_name::type_name;

/// The attribute's expansion: the generated code, or the errors beside the trait (so that uses
/// of the trait do not pile further errors on top of them).
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    let options = Options::parse(attr);
    let item: ItemTrait = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(_) => return error_beside(not_a_trait(item.clone()), item),
    };
    let checked = options.and_then(|options| Ok((options, Service::parse(item.clone())?)));
    match checked {
        Ok((options, service)) => Expander {
            root: options.root,
            service: &service,
        }
        .expand(),
        Err(e) => error_beside(e, service_trait(item).into_token_stream()),
    }
}

/// The error for anything but a trait, at the keyword that says what it is.
fn not_a_trait(item: TokenStream) -> syn::Error {
    let (span, what): (Span, &str) = match syn::parse2::<Item>(item) {
        Ok(Item::Struct(s)) => (s.struct_token.span, "a struct"),
        Ok(Item::Enum(e)) => (e.enum_token.span, "an enum"),
        Ok(Item::Union(u)) => (u.union_token.span, "a union"),
        Ok(Item::Fn(f)) => (f.sig.fn_token.span, "a function"),
        Ok(Item::Impl(i)) => (i.impl_token.span, "an impl block"),
        Ok(Item::Mod(m)) => (m.mod_token.span, "a module"),
        _ => (Span::call_site(), "this item"),
    };
    syn::Error::new(
        span,
        format!(
            "#[shoal::service] applies to a trait, not {what}: `pub trait Name {{ async fn \
             method(&self, ..) -> T; }}`"
        ),
    )
}

fn error_beside(error: syn::Error, item: TokenStream) -> TokenStream {
    let error = error.to_compile_error();
    quote!(#error #item)
}

/// The trait as it is emitted: `Send + Sync + 'static`, each `async fn` returning a `Send`
/// future, without the `#[shoal(...)]` attributes (which mean nothing to rustc). Also applied
/// to a trait that failed the checks, so that only the checks' errors are reported.
fn service_trait(mut item: ItemTrait) -> ItemTrait {
    item.supertraits.push(parse_quote!(::core::marker::Send));
    item.supertraits.push(parse_quote!(::core::marker::Sync));
    item.supertraits.push(parse_quote!('static));
    for trait_item in &mut item.items {
        let TraitItem::Fn(func) = trait_item else {
            continue;
        };
        func.attrs.retain(|a| !a.path().is_ident("shoal"));
        if func.default.is_none() {
            // rustc rejects patterns in methods without a body; the checks report them already.
            for input in &mut func.sig.inputs {
                if let FnArg::Typed(arg) = input {
                    if !matches!(&*arg.pat, Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none())
                    {
                        arg.pat = parse_quote!(_);
                    }
                }
            }
        }
        if func.sig.asyncness.take().is_none() {
            continue;
        }
        let output = match &func.sig.output {
            ReturnType::Default => quote!(()),
            ReturnType::Type(_, ty) => ty.to_token_stream(),
        };
        func.sig.output = parse_quote! {
            -> impl ::core::future::Future<Output = #output> + ::core::marker::Send
        };
        if let Some(body) = &func.default {
            func.default = Some(parse_quote!({ async move #body }));
        }
    }
    item
}

struct Expander<'a> {
    root: Path,
    service: &'a Service,
}

impl Expander<'_> {
    fn expand(&self) -> TokenStream {
        let service_trait = service_trait(self.service.item.clone()).into_token_stream();
        let server = self.server();
        let client = self.client();
        quote! {
            #service_trait
            #server
            #client
        }
    }

    fn server(&self) -> TokenStream {
        let root = &self.root;
        let rpc = quote!(#root::rpc);
        let item = &self.service.item;
        let vis = &item.vis;
        let trait_ident = &item.ident;
        let trait_name = trait_ident.to_string();
        let server = format_ident!("{}Server", trait_ident);
        let doc = format!(
            "Serves [`{trait_name}`]: decodes each call's arguments, calls the implementation and \
             encodes its reply."
        );
        let infos = self.service.methods.iter().map(|m| self.method_info(m));
        let arms = self.service.methods.iter().map(|m| self.dispatch_arm(m));
        let in_place_arms = self
            .service
            .methods
            .iter()
            .enumerate()
            .map(|(index, m)| self.in_place_arm(index, m));
        let names = ArmNames::new();
        let (req, call) = (&names.req, &names.call);

        quote! {
            #[doc = #doc]
            #vis struct #server<T: #trait_ident> {
                inner: ::std::sync::Arc<T>,
            }

            impl<T: #trait_ident> #server<T> {
                /// Serves `service`.
                #vis fn new(service: T) -> Self {
                    Self::from_arc(::std::sync::Arc::new(service))
                }

                /// Serves an implementation shared with other owners.
                #vis fn from_arc(service: ::std::sync::Arc<T>) -> Self {
                    Self { inner: service }
                }
            }

            impl<T: #trait_ident> ::core::clone::Clone for #server<T> {
                fn clone(&self) -> Self {
                    Self { inner: ::std::sync::Arc::clone(&self.inner) }
                }
            }

            impl<T: #trait_ident> ::core::fmt::Debug for #server<T> {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.debug_struct(::core::stringify!(#server)).finish_non_exhaustive()
                }
            }

            impl<T: #trait_ident> #rpc::Dispatch for #server<T> {
                fn service_name(&self) -> &'static str {
                    #trait_name
                }

                fn methods(&self) -> &'static [#rpc::MethodInfo] {
                    const METHODS: &[#rpc::MethodInfo] = &[#(#infos),*];
                    METHODS
                }

                fn call(&self, #req: #rpc::Request) -> #rpc::BoxReply {
                    match #req.method.as_str() {
                        #(#arms)*
                        _ => ::std::boxed::Box::pin(::core::future::ready(::core::result::Result::Err(
                            #rpc::RpcError::method_not_found(&#req.method),
                        ))),
                    }
                }

                fn call_in_place(&self, #call: &mut #rpc::CallInPlace<'_>) -> ::core::option::Option<#rpc::InPlace> {
                    // Arms by the method's place in `methods()`.
                    ::core::option::Option::Some(match #call.method_index() {
                        #(#in_place_arms)*
                        _ => return ::core::option::Option::None,
                    })
                }

                fn takes_calls_in_place(&self) -> bool {
                    true
                }
            }
        }
    }

    fn method_info(&self, m: &Method) -> TokenStream {
        let root = &self.root;
        let name = &m.wire_name;
        let params = m.wire_params().map(|(ident, ty)| {
            let ident = syn::ext::IdentExt::unraw(ident).to_string();
            let ty = type_name(ty.to_token_stream());
            quote!((#ident, #ty))
        });
        let returns = m
            .returns
            .written()
            .map_or("()".to_owned(), |ty| type_name(ty.to_token_stream()));
        let (notify, blocking, idempotent) = (m.flags.notify, m.flags.blocking, m.flags.idempotent);
        quote! {
            #root::rpc::MethodInfo {
                name: #name,
                params: &[#(#params),*],
                returns: #returns,
                notify: #notify,
                blocking: #blocking,
                idempotent: #idempotent,
            }
        }
    }

    /// `"name" => Box::pin(async move { decode, call, encode })`.
    fn dispatch_arm(&self, m: &Method) -> TokenStream {
        let rpc = self.rpc();
        let name = &m.wire_name;
        let names = ArmNames::new();
        let (req, params, ctx) = (&names.req, &names.params, &names.ctx);
        let open_args = open_args(
            m,
            &names,
            |arity| quote!(#rpc::Args::new(#name, #params, #arity)),
        );
        let decode = decode_args(m, &names);
        let ctx_binding = needs_context(m).then(|| quote!(let #ctx = #req.ctx;));
        let run = self.run_and_reply(m, &names);
        let this = &names.this;
        quote! {
            #name => {
                let #this = ::std::sync::Arc::clone(&self.inner);
                let #params = #req.params;
                #ctx_binding
                ::std::boxed::Box::pin(async move {
                    #open_args
                    #(#decode)*
                    #run
                })
            }
        }
    }

    /// `index => { decode from the bytes; call.start(...) }`, by the method's place in
    /// `methods()`: the arguments are decoded before the future is made, while the bytes are
    /// there, and the future is polled where it is made (see `CallInPlace::start`).
    fn in_place_arm(&self, index: usize, m: &Method) -> TokenStream {
        let rpc = self.rpc();
        let name = &m.wire_name;
        let names = ArmNames::new();
        let (call, ctx, this) = (&names.call, &names.ctx, &names.this);
        let open_args = open_args(m, &names, |arity| quote!(#call.args(#name, #arity)));
        let decode = decode_args(m, &names);
        let idents: Vec<&Ident> = m.wire_params().map(|(ident, _)| ident).collect();
        let ctx_binding = needs_context(m).then(|| quote!(let #ctx = #call.context();));
        // The future gives the handle on the service back with its result.
        let start = if m.flags.notify && !m.flags.blocking {
            let handler = self.handler_call(m, &names);
            quote! {
                #call.start_one_way(&self.inner, move |#this: ::std::sync::Arc<T>| async move {
                    #handler;
                    ((), #this)
                })
            }
        } else {
            let run = self.run_and_reply(m, &names);
            quote! {
                #call.start(&self.inner, move |#this: ::std::sync::Arc<T>| async move {
                    let out = async { #run }.await;
                    (out, #this)
                })
            }
        };
        let index = proc_macro2::Literal::usize_unsuffixed(index);
        quote! {
            #index => {
                let decoded = (|| -> ::core::result::Result<_, #rpc::RpcError> {
                    #open_args
                    #(#decode)*
                    ::core::result::Result::Ok((#(#idents,)*))
                })();
                match decoded {
                    ::core::result::Result::Ok((#(#idents,)*)) => {
                        #ctx_binding
                        #start
                    }
                    ::core::result::Result::Err(e) => #call.answer(::core::result::Result::Err(e)),
                }
            }
        }
    }

    fn rpc(&self) -> TokenStream {
        let root = &self.root;
        quote!(#root::rpc)
    }

    /// The call of the implementation, awaited.
    fn handler_call(&self, m: &Method, names: &ArmNames) -> TokenStream {
        let ident = &m.ident;
        let trait_ident = &self.service.item.ident;
        let (this, ctx) = (&names.this, &names.ctx);
        let call_args: Vec<TokenStream> = m
            .params
            .iter()
            .map(|p| match p {
                Param::Context => quote!(&#ctx),
                Param::Wire { ident, .. } => ident.to_token_stream(),
            })
            .collect();
        if m.flags.blocking {
            let ctx_copy = m.takes_context().then(|| quote!(let #ctx = #ctx.clone();));
            // The pool's thread takes a handle of its own: the call's future keeps its own to
            // give back (see `CallInPlace::start`).
            quote! {
                #ctx.run_blocking({
                    #ctx_copy
                    let #this = ::std::sync::Arc::clone(&#this);
                    move || <T as #trait_ident>::#ident(&*#this, #(#call_args),*)
                }).await?
            }
        } else {
            quote!(<T as #trait_ident>::#ident(&*#this, #(#call_args),*).await)
        }
    }

    /// The call of the implementation and the encoding of what it returns (or, for a
    /// notification, of nothing).
    fn run_and_reply(&self, m: &Method, names: &ArmNames) -> TokenStream {
        let rpc = self.rpc();
        let call = self.handler_call(m, names);
        // Located at the return type, so that a type that cannot be encoded is reported there.
        let return_span = m.returns.written().map_or(Span::call_site(), Spanned::span);
        let out = Ident::new("out", Span::mixed_site().located_at(return_span));
        if m.flags.notify {
            return quote! {
                #call;
                ::core::result::Result::Ok(#rpc::Reply::none())
            };
        }
        match &m.returns {
            Returns::Unit | Returns::Value(_) => quote_spanned! {return_span=>
                let #out = #call;
                #rpc::Reply::encode(&#out)
            },
            Returns::Result { .. } => quote_spanned! {return_span=>
                match #call {
                    ::core::result::Result::Ok(#out) => #rpc::Reply::encode(&#out),
                    ::core::result::Result::Err(e) => ::core::result::Result::Err(
                        ::core::convert::Into::<#rpc::RpcError>::into(e),
                    ),
                }
            },
        }
    }

    fn client(&self) -> TokenStream {
        let root = &self.root;
        let rpc = quote!(#root::rpc);
        let item = &self.service.item;
        let vis = &item.vis;
        let trait_name = item.ident.to_string();
        let client = format_ident!("{}Client", item.ident);
        let doc = format!("Calls a remote [`{trait_name}`]; cheap to clone.");
        let methods = self.service.methods.iter().map(|m| self.client_method(m));

        quote! {
            #[doc = #doc]
            #[derive(::core::clone::Clone, ::core::fmt::Debug)]
            #vis struct #client {
                client: #rpc::Client,
                opts: #rpc::CallOptions,
            }

            impl #client {
                /// Calls through `client` with its default options.
                #vis fn new(client: #rpc::Client) -> Self {
                    Self { client, opts: ::core::default::Default::default() }
                }

                /// Gives every call this deadline instead of the client's default.
                #vis fn with_timeout(mut self, timeout: ::core::time::Duration) -> Self {
                    self.opts.timeout = ::core::option::Option::Some(timeout);
                    self
                }

                /// Routes every call by `key` (for hashring and shard balancing).
                #vis fn with_key(mut self, key: impl ::core::convert::Into<#rpc::RouteKey>) -> Self {
                    self.opts.key = ::core::option::Option::Some(key.into());
                    self
                }

                /// The untyped client underneath.
                #vis fn client(&self) -> &#rpc::Client {
                    &self.client
                }

                #(#methods)*
            }
        }
    }

    fn client_method(&self, m: &Method) -> TokenStream {
        let root = &self.root;
        let rpc = quote!(#root::rpc);
        let vis = &self.service.item.vis;
        let docs = &m.docs;
        let ident = &m.ident;
        let name = &m.wire_name;
        let params = m.wire_params().map(|(ident, ty)| quote!(#ident: #ty));
        let values = m.wire_params().map(|(ident, _)| ident);
        let args = if m.wire_params().next().is_none() {
            quote!(&[(); 0])
        } else {
            quote!(&(#(#values,)*))
        };
        let opts = if m.flags.idempotent {
            quote!(&#rpc::CallOptions { idempotent: true, ..::core::clone::Clone::clone(&self.opts) })
        } else {
            quote!(&self.opts)
        };
        let (output, body) = if m.flags.notify {
            let body = quote!(self.client.notify_with(#opts, #name, #args).await);
            (quote!(()), body)
        } else {
            let output = match &m.returns {
                Returns::Unit => quote!(()),
                Returns::Value(ty) | Returns::Result { ok: ty, .. } => ty.to_token_stream(),
            };
            let body = quote! {
                self.client.call_with(#opts, #name, #args).await
            };
            (output, body)
        };
        quote! {
            #(#docs)*
            #vis async fn #ident(&self, #(#params),*) -> ::core::result::Result<#output, #rpc::Error> {
                #body
            }
        }
    }
}

/// Names the generated dispatch code binds, mixed-site so that they cannot collide with
/// the method's own parameter names.
struct ArmNames {
    req: Ident,
    call: Ident,
    params: Ident,
    args: Ident,
    ctx: Ident,
    this: Ident,
}

impl ArmNames {
    fn new() -> Self {
        let name = |n: &str| Ident::new(n, Span::mixed_site());
        Self {
            req: name("req"),
            call: name("call"),
            params: name("params"),
            args: name("args"),
            ctx: name("ctx"),
            this: name("this"),
        }
    }
}

/// `let mut args = <open(arity)>?;` (`Args` checks the arity even when there is nothing to
/// read).
fn open_args(m: &Method, names: &ArmNames, open: impl FnOnce(usize) -> TokenStream) -> TokenStream {
    let arity = m.wire_params().count();
    let (args, open) = (&names.args, open(arity));
    if arity == 0 {
        quote!(#open?;)
    } else {
        quote!(let mut #args = #open?;)
    }
}

/// `let name: Type = args.next("name")?;` for each wire parameter, located at its type.
fn decode_args<'a>(m: &'a Method, names: &'a ArmNames) -> impl Iterator<Item = TokenStream> + 'a {
    let args = &names.args;
    m.wire_params().map(move |(ident, ty)| {
        let label = syn::ext::IdentExt::unraw(ident).to_string();
        quote_spanned! {ty.span()=>
            let #ident: #ty = #args.next(#label)?;
        }
    })
}

/// The handler gets a [`Context`]: it takes one, or runs on the blocking pool.
fn needs_context(m: &Method) -> bool {
    m.takes_context() || m.flags.blocking
}
