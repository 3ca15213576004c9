//! [`PhoneNumber`]: a user's phone number as WeChat hands it out.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The longest phone number accepted in any of its forms, in bytes: E.164 allows 15
/// digits; the rest is room for a `+`, a country code and a separator.
const MAX_NUMBER_LEN: usize = 32;

/// A phone number a user bound through WeChat (`getuserphonenumber`, or the legacy
/// encrypted `getPhoneNumber` data).
///
/// Serialized with snake_case names, the body of `POST /auth/phone`'s answer.
/// Deserialized from WeChat's camelCase names as well; `countryCode` may arrive as a
/// string or a number. `Debug` masks the middle of the number: phone numbers are
/// personal data and have no place in logs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhoneNumber {
    /// The number as the user sees it, with the country code for numbers outside
    /// mainland China (WeChat's `phoneNumber`).
    #[serde(alias = "phoneNumber")]
    pub phone_number: String,
    /// The number without its country code (WeChat's `purePhoneNumber`).
    #[serde(alias = "purePhoneNumber")]
    pub pure_phone_number: String,
    /// The country calling code, digits only, e.g. `86` (WeChat's `countryCode`).
    #[serde(alias = "countryCode", deserialize_with = "country_code")]
    pub country_code: String,
}

impl PhoneNumber {
    /// Whether every part has a plausible shape: `pure_phone_number` is 4 to 20 ASCII
    /// digits, `country_code` 1 to 4, and `phone_number` at most 32 visible ASCII
    /// characters holding the pure number. Anything else from WeChat is refused.
    pub fn is_well_formed(&self) -> bool {
        let digits = |s: &str, range: std::ops::RangeInclusive<usize>| {
            range.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
        };
        digits(&self.pure_phone_number, 4..=20)
            && digits(&self.country_code, 1..=4)
            && !self.phone_number.is_empty()
            && self.phone_number.len() <= MAX_NUMBER_LEN
            && self
                .phone_number
                .bytes()
                .all(|b| b.is_ascii_graphic() || b == b' ')
            && self.phone_number.contains(self.pure_phone_number.as_str())
    }

    /// The number with at least half its digits hidden, for logs: the first three and
    /// last two of 10 or more digits (`+86 138******00`), the last two of 6 to 9, none
    /// of fewer.
    pub fn masked(&self) -> String {
        mask(&self.country_code, &self.pure_phone_number)
    }
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PhoneNumber").field(&self.masked()).finish()
    }
}

/// `+<country code> <number>` with at least half the number's digits hidden.
pub(crate) fn mask(country_code: &str, pure: &str) -> String {
    let n = pure.len();
    if !pure.is_ascii() || n < 6 {
        return format!("+{country_code} ****");
    }
    let (head, tail) = if n >= 10 { (3, 2) } else { (0, 2) };
    format!(
        "+{country_code} {}{}{}",
        &pure[..head],
        "*".repeat(n - head - tail),
        &pure[n - tail..]
    )
}

/// `countryCode` as WeChat sends it: `"86"` or `86`.
fn country_code<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Code {
        Text(String),
        Number(u64),
    }
    Ok(match Code::deserialize(deserializer)? {
        Code::Text(text) => text,
        Code::Number(number) => number.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> PhoneNumber {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn country_codes_arrive_as_strings_or_numbers() {
        let text = parse(
            r#"{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86"}"#,
        );
        let number = parse(
            r#"{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":86}"#,
        );
        assert_eq!(text, number);
        assert_eq!(text.country_code, "86");
        assert!(text.is_well_formed());
        assert!(
            serde_json::from_str::<PhoneNumber>(
                r#"{"phoneNumber":"1","purePhoneNumber":"1","countryCode":-1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn implausible_numbers_are_not_well_formed() {
        let good = PhoneNumber {
            phone_number: "+1 4155550100".into(),
            pure_phone_number: "4155550100".into(),
            country_code: "1".into(),
        };
        assert!(good.is_well_formed());
        let bad = [
            ("", "4155550100", "1"),
            ("+1 4155550100", "415", "1"),
            ("+1 4155550100", "41555501x0", "1"),
            ("+1 4155550100", "4155550100", ""),
            ("+1 4155550100", "4155550100", "12345"),
            ("+1 4155550199", "4155550100", "1"),
            ("+1\n4155550100", "4155550100", "1"),
        ];
        for (full, pure, cc) in bad {
            let number = PhoneNumber {
                phone_number: full.into(),
                pure_phone_number: pure.into(),
                country_code: cc.into(),
            };
            assert!(!number.is_well_formed(), "{full:?} {pure:?} {cc:?}");
        }
    }

    #[test]
    fn debug_masks_the_number() {
        let number = parse(
            r#"{"phoneNumber":"13800138000","purePhoneNumber":"13800138000","countryCode":"86"}"#,
        );
        let shown = format!("{number:?}");
        assert_eq!(shown, r#"PhoneNumber("+86 138******00")"#);
        for (pure, masked) in [
            ("61234567", "+86 ******67"),
            ("4155550100", "+86 415*****00"),
            ("12345", "+86 ****"),
        ] {
            assert_eq!(mask("86", pure), masked);
            let hidden = masked.matches('*').count();
            assert!(hidden * 2 >= pure.len(), "at least half hidden: {masked}");
        }
        assert!(!shown.contains("13800138000"));
        let json = serde_json::to_value(&number).unwrap();
        assert_eq!(json["pure_phone_number"], "13800138000");
        assert_eq!(json["country_code"], "86");
    }
}
