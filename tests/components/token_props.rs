//! Property tests of token generation and parsing: round trips, and no input that makes
//! parsing panic or accept something outside the grammar.

use mpauthx::{ParsedToken, Sku, Token, TokenHash, extract_open_id, extract_sku};
use proptest::{prelude::*, test_runner::FileFailurePersistence};

proptest! {
    // Failures are kept beside this file (`token_props.proptest-regressions`); by default
    // proptest would put them under `tests/proptest-regressions/`, this binary's `main.rs`
    // marking `tests/components/` as a crate root.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions"
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn generated_tokens_parse_back_to_their_parts(
        sku in "[A-Za-z0-9_-]{1,32}",
        open_id in "[A-Za-z0-9_-]{1,64}",
    ) {
        let sku = Sku::new(&sku).unwrap();
        let token = Token::generate(&sku, &open_id).unwrap();
        let parsed = ParsedToken::parse(token.expose()).unwrap();
        prop_assert_eq!(parsed.sku(), sku.as_str());
        prop_assert_eq!(parsed.open_id(), open_id.as_str());
        prop_assert_eq!(parsed.hash(), token.hash());
        prop_assert_eq!(extract_sku(token.expose()), Some(sku.as_str()));
        prop_assert_eq!(extract_open_id(token.expose()), Some(open_id.as_str()));
        prop_assert_eq!(TokenHash::from_id(token.hash().id().as_str()), Some(token.hash()));
    }

    #[test]
    fn parsing_accepts_exactly_the_grammar_near_it(
        text in "[A-Za-z0-9_.~-]{0,34}\\.[A-Za-z0-9_.~-]{0,66}\\.[A-Za-z0-9_.=~-]{41,45}",
    ) {
        // The grammar, by its definition: three dot-separated parts of `[A-Za-z0-9_-]`,
        // 1 to 32, 1 to 64 and exactly 43 long.
        let part = |p: &str, lengths: std::ops::RangeInclusive<usize>| {
            lengths.contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        let parts: Vec<&str> = text.split('.').collect();
        let in_grammar = parts.len() == 3
            && part(parts[0], 1..=32)
            && part(parts[1], 1..=64)
            && part(parts[2], 43..=43);
        prop_assert_eq!(ParsedToken::parse(&text).is_ok(), in_grammar, "{:?}", text);
    }

    #[test]
    fn parsing_any_string_never_panics_and_accepts_only_the_grammar(text in ".{0,200}") {
        if let Ok(parsed) = ParsedToken::parse(&text) {
            let parts: Vec<&str> = text.split('.').collect();
            prop_assert_eq!(parts.len(), 3);
            prop_assert_eq!(parsed.sku(), parts[0]);
            prop_assert_eq!(parsed.open_id(), parts[1]);
            prop_assert_eq!(parts[2].len(), 43);
            prop_assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)));
        }
    }

    #[test]
    fn near_misses_of_a_real_token_are_rejected(
        cut in 0usize..140,
        insert in prop::sample::select(vec![".", " ", "+", "/", "=", "é", "\0"]),
    ) {
        let token = Token::generate(&Sku::new("demo").unwrap(), "oGZUI0egBJY1zhBYw2KhdUfwVJJE").unwrap();
        let text = token.expose();
        let at = cut.min(text.len());
        let mangled = format!("{}{insert}{}", &text[..at], &text[at..]);
        prop_assert!(ParsedToken::parse(&mangled).is_err(), "{:?}", mangled);
        if at < text.len() {
            prop_assert!(ParsedToken::parse(&text[..at]).is_err(), "a truncated token");
        }
    }
}
