//! What `check --online` says about a CRM mapping: a name the account does not have, with
//! the nearest one it has.

/// Names further than this many edits from every known one get no suggestion: a guess that
/// far off would mislead more than help.
const MAX_EDITS: usize = 3;

/// The known name nearest to `wanted` (edit distance, ignoring case), if near enough.
pub(crate) fn nearest<'a>(
    wanted: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let wanted = wanted.to_lowercase();
    known
        .into_iter()
        .map(|name| (edits(&wanted, &name.to_lowercase()), name))
        .filter(|(distance, _)| *distance <= MAX_EDITS.min(wanted.chars().count().max(1)))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

/// `; did you mean X?`, or nothing when no known name is near.
pub(crate) fn did_you_mean<'a>(wanted: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    nearest(wanted, known)
        .map(|name| format!("; did you mean {name}?"))
        .unwrap_or_default()
}

/// Levenshtein distance, over characters.
fn edits(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current.push(substitution.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_name_gets_the_nearest_known_one() {
        let known = ["lifecyclestage", "hs_lead_status", "firstname"];
        assert_eq!(nearest("lifecyclestag", known), Some("lifecyclestage"));
        assert_eq!(nearest("HS_LEAD_STATUS", known), Some("hs_lead_status"));
        assert_eq!(nearest("something_else", known), None);
        assert_eq!(did_you_mean("x", known), "");
        assert_eq!(edits("kitten", "sitting"), 3);
    }
}
