//! Whether an email's domain is a free-mail or disposable provider's (gmail.com,
//! outlook.com, mailinator.com…): such an address names a person, not the company they
//! work for, so no company or organisation is made of its domain.

/// The list, one domain a line, sorted; see the file's header for where it comes from and
/// how to update it. Embedded so that the check needs no file at run time; searched by
/// bisection, which touches a handful of its pages, not all of it.
const LIST: &str = include_str!("../../data/free-email-domains.txt");

/// The domains, in order, without the header's comments and blank lines.
fn domains() -> impl Iterator<Item = &'static str> {
    LIST.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
}

/// The domain part of an email address, lowercased; `None` without one.
pub(crate) fn email_domain(email: &str) -> Option<String> {
    let (_, domain) = email.rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty() && domain.contains('.')).then_some(domain)
}

/// Whether `domain` (lowercase) belongs to a free-mail or disposable provider.
pub(crate) fn is_free_mail(domain: &str) -> bool {
    static SORTED: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    let sorted = SORTED.get_or_init(|| domains().collect());
    sorted.binary_search(&domain).is_ok()
}

/// The company domain of an email: its domain, unless a free-mail provider's.
pub(crate) fn company_domain(email: &str) -> Option<String> {
    email_domain(email).filter(|domain| !is_free_mail(domain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_lowercase_and_without_duplicates() {
        let all: Vec<&str> = domains().collect();
        assert!(all.len() > 1_000, "{}", all.len());
        for pair in all.windows(2) {
            assert!(pair[0] < pair[1], "{} then {}", pair[0], pair[1]);
        }
        assert!(
            all.iter()
                .all(|domain| *domain == domain.to_ascii_lowercase())
        );
    }

    #[test]
    fn consumer_providers_are_free_mail_and_business_domains_are_not() {
        for free in [
            "gmail.com",
            "googlemail.com",
            "yahoo.com",
            "outlook.com",
            "hotmail.com",
            "icloud.com",
            "proton.me",
            "gmx.de",
            "web.de",
            "yandex.ru",
            "qq.com",
            "mailinator.com",
        ] {
            assert!(is_free_mail(free), "{free}");
        }
        for business in ["techstart.io", "acme.com", "example.org"] {
            assert!(!is_free_mail(business), "{business}");
        }
    }

    #[test]
    fn a_company_domain_is_the_lowercased_part_after_the_at_unless_free_mail() {
        assert_eq!(
            company_domain("John@TechStart.IO").as_deref(),
            Some("techstart.io")
        );
        assert_eq!(company_domain("ann@Gmail.com"), None);
        assert_eq!(company_domain("no-at-sign"), None);
    }
}
