//! Writes a type's tokens the way a person would (`Option<String>`, not `Option < String >`),
//! for the signatures `shoal.methods` lists.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};

/// `tokens` as readable Rust source.
pub fn type_name(tokens: TokenStream) -> String {
    let mut pieces = Vec::new();
    flatten(tokens, &mut pieces);
    let mut out = String::new();
    let mut prev: Option<&Piece> = None;
    for piece in &pieces {
        if let Some(prev) = prev {
            if space_between(prev, piece) {
                out.push(' ');
            }
        }
        match piece {
            Piece::Word(s) | Piece::Op(s) => out.push_str(s),
            Piece::Open(c) | Piece::Close(c) => out.push(*c),
        }
        prev = Some(piece);
    }
    out
}

enum Piece {
    /// An identifier or literal.
    Word(String),
    /// One or more joined punctuation characters: `::`, `->`, `&`, `'`.
    Op(String),
    Open(char),
    Close(char),
}

fn flatten(tokens: TokenStream, pieces: &mut Vec<Piece>) {
    let mut joining = false;
    for tree in tokens {
        match tree {
            TokenTree::Ident(i) => pieces.push(Piece::Word(i.to_string())),
            TokenTree::Literal(l) => pieces.push(Piece::Word(l.to_string())),
            TokenTree::Punct(p) => {
                match pieces.last_mut() {
                    Some(Piece::Op(op)) if joining => op.push(p.as_char()),
                    _ => pieces.push(Piece::Op(p.as_char().to_string())),
                }
                // A lifetime's `'` is joint with the identifier after it, not with punctuation.
                joining = p.spacing() == Spacing::Joint && p.as_char() != '\'';
                continue;
            }
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ('(', ')'),
                    Delimiter::Bracket => ('[', ']'),
                    Delimiter::Brace => ('{', '}'),
                    Delimiter::None => {
                        flatten(g.stream(), pieces);
                        joining = false;
                        continue;
                    }
                };
                pieces.push(Piece::Open(open));
                flatten(g.stream(), pieces);
                pieces.push(Piece::Close(close));
            }
        }
        joining = false;
    }
}

fn space_between(prev: &Piece, next: &Piece) -> bool {
    const SPACED: &[&str] = &["+", "=", "->"];
    match (prev, next) {
        (Piece::Word(_), Piece::Word(_)) => true,
        (Piece::Op(op), _) if SPACED.contains(&op.as_str()) => true,
        (_, Piece::Op(op)) if SPACED.contains(&op.as_str()) => true,
        (Piece::Op(op), next) if op == "," || op == ";" => !matches!(next, Piece::Close(_)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::type_name;

    fn check(tokens: proc_macro2::TokenStream, expected: &str) {
        assert_eq!(type_name(tokens), expected);
    }

    #[test]
    fn types_read_as_written() {
        check(quote!(i64), "i64");
        check(quote!(Option<String>), "Option<String>");
        check(quote!(Vec<Vec<u8>>), "Vec<Vec<u8>>");
        check(
            quote!(std::collections::HashMap<String, i64>),
            "std::collections::HashMap<String, i64>",
        );
        check(quote!(Result<i64, RpcError>), "Result<i64, RpcError>");
        check(quote!(()), "()");
        check(quote!((i64,)), "(i64,)");
        check(quote!((i64, String)), "(i64, String)");
        check(quote!([u8; 4]), "[u8; 4]");
        check(quote!(&'static str), "&'static str");
        check(
            quote!(Box<dyn Fn(u8) -> u8 + Send>),
            "Box<dyn Fn(u8) -> u8 + Send>",
        );
        check(quote!(<T as Trait>::Out), "<T as Trait>::Out");
        check(
            quote!(::core::option::Option<u8>),
            "::core::option::Option<u8>",
        );
    }
}
