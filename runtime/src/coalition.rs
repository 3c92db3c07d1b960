//! Coalitions: several buyers pooling one purchase.
//!
//! The lead buyer negotiates; every member (the lead included) pays a part of the agreed price,
//! held from its own wallet into the payment's escrow in the write that records the commitment.
//! Shares are integer weights; [`split_price`] turns a price into parts in integer minor units:
//!
//! - each member first gets `floor(price × weight / total weight)`;
//! - the minor units left over (fewer than the number of members) go one each to the members
//!   with the largest remainders `price × weight mod total weight`, ties broken by agent id
//!   (the smaller id first).
//!
//! So the parts always sum to the price, a member's part never differs from its exact
//! proportional share by a whole minor unit or more, and the split is a function of the price and
//! the members alone.

use serde::{Deserialize, Serialize};

/// Most members in one coalition, the lead included: each is a hold and a release.
pub const COALITION_MEMBERS_MAX: usize = 16;
/// Largest weight of one member: weights are small integers (shares such as 1, 2, 3 or
/// percentages), and `price × total weight` stays far inside 128 bits.
pub const COALITION_WEIGHT_MAX: u64 = 1_000_000;
/// The split rule as recorded in `session.created`.
pub const SPLIT_RULE: &str = "proportional to weight, remainder by largest remainder, ties by agent id";

/// A coalition member as recorded in `session.created`: who, with which key, and its weight.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoalitionMember {
    pub agent_id: String,
    pub key_id: String,
    pub public_key: String,
    pub weight: u64,
}

/// `session.created`'s `coalition`: the members (sorted by agent id, the lead among them) and
/// the split rule.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoalitionBody {
    pub lead: String,
    pub members: Vec<CoalitionMember>,
    pub split: String,
}

impl CoalitionBody {
    /// Checks the recorded coalition: 2 to [`COALITION_MEMBERS_MAX`] members sorted by agent id
    /// with no duplicate, weights 1 to [`COALITION_WEIGHT_MAX`], the lead a member, the rule ours.
    pub fn validate(&self, buyer: &str) -> Result<(), String> {
        if self.lead != buyer {
            return Err(format!("the coalition's lead {} is not the session's buyer {buyer}", self.lead));
        }
        if self.split != SPLIT_RULE {
            return Err(format!("unknown split rule {:?}", self.split));
        }
        if self.members.len() < 2 || self.members.len() > COALITION_MEMBERS_MAX {
            return Err(format!("a coalition has 2 to {COALITION_MEMBERS_MAX} members, not {}", self.members.len()));
        }
        if !self.members.windows(2).all(|pair| pair[0].agent_id < pair[1].agent_id) {
            return Err("coalition members must be sorted by agent id, each once".into());
        }
        if !self.members.iter().any(|member| member.agent_id == self.lead) {
            return Err("the lead must be a member of the coalition".into());
        }
        if let Some(member) = self.members.iter().find(|m| m.weight == 0 || m.weight > COALITION_WEIGHT_MAX) {
            return Err(format!("{}'s weight {} is not 1 to {COALITION_WEIGHT_MAX}", member.agent_id, member.weight));
        }
        Ok(())
    }

    /// The member `agent_id`, if it belongs to the coalition.
    pub fn member(&self, agent_id: &str) -> Option<&CoalitionMember> {
        self.members.iter().find(|member| member.agent_id == agent_id)
    }

    /// Each member's part of `amount_minor`, by [`split_price`], members with a zero part
    /// left out (they pay nothing, so nothing is held from them).
    pub fn parts(&self, amount_minor: u64) -> Vec<(String, u64)> {
        let weights: Vec<(&str, u64)> = self.members.iter().map(|m| (m.agent_id.as_str(), m.weight)).collect();
        split_price(amount_minor, &weights).into_iter().filter(|(_, part)| *part > 0).collect()
    }
}

/// Splits `amount_minor` among `(agent id, weight)` pairs (see the module docs). Returns the
/// parts in the order given. Weights of zero get nothing; if every weight is zero, nothing is
/// split (an empty vector).
pub fn split_price(amount_minor: u64, weights: &[(&str, u64)]) -> Vec<(String, u64)> {
    let total: u128 = weights.iter().map(|(_, weight)| u128::from(*weight)).sum();
    if total == 0 {
        return Vec::new();
    }
    let amount = u128::from(amount_minor);
    let mut parts: Vec<(String, u64)> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(u128, &str, usize)> = Vec::with_capacity(weights.len());
    let mut assigned: u128 = 0;
    for (index, (agent_id, weight)) in weights.iter().enumerate() {
        let exact = amount * u128::from(*weight);
        let floor = exact / total;
        assigned += floor;
        // floor ≤ amount_minor, so it fits in u64.
        parts.push(((*agent_id).to_owned(), u64::try_from(floor).unwrap_or(u64::MAX)));
        remainders.push((exact % total, agent_id, index));
    }
    // Fewer leftover units than members: Σ floor > amount − members.
    let leftover = amount - assigned;
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    for (_, _, index) in remainders.iter().take(usize::try_from(leftover).unwrap_or(usize::MAX)) {
        parts[*index].1 += 1;
    }
    parts
}

/// Parses a `--coalition` argument: `<agent id>=<weight>`.
pub fn parse_member_spec(text: &str) -> Result<(String, u64), String> {
    let (agent_id, weight) =
        text.split_once('=').ok_or_else(|| format!("{text:?} is not <agent>=<weight> (such as alice=2)"))?;
    crate::identities::check_agent_id(agent_id).map_err(|e| e.to_string())?;
    let weight: u64 = weight.parse().map_err(|_| format!("the weight in {text:?} is not a whole number"))?;
    if weight == 0 || weight > COALITION_WEIGHT_MAX {
        return Err(format!("the weight in {text:?} is not 1 to {COALITION_WEIGHT_MAX}"));
    }
    Ok((agent_id.to_owned(), weight))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(amount: u64, weights: &[(&str, u64)], expected: &[u64]) {
        let parts: Vec<u64> = split_price(amount, weights).into_iter().map(|(_, part)| part).collect();
        assert_eq!(parts, expected, "{amount} over {weights:?}");
    }

    #[test]
    fn splits_as_documented() {
        check(100, &[("a", 1), ("b", 1)], &[50, 50]);
        // 10 over 1:1:1 is 3.33 each; the leftover unit goes to the smallest id.
        check(10, &[("a", 1), ("b", 1), ("c", 1)], &[4, 3, 3]);
        check(10, &[("c", 1), ("b", 1), ("a", 1)], &[3, 3, 4]);
        // 7 over 2:1 is 4.67 and 2.33: a's remainder is larger.
        check(7, &[("a", 2), ("b", 1)], &[5, 2]);
        check(7, &[("a", 1), ("b", 2)], &[2, 5]);
        check(1, &[("a", 1), ("b", 1), ("c", 1)], &[1, 0, 0]);
        check(0, &[("a", 1), ("b", 3)], &[0, 0]);
        check(24, &[("buyer", 1), ("alice", 2), ("bob", 3)], &[4, 8, 12]);
        assert!(split_price(5, &[("a", 0)]).is_empty());
    }

    #[test]
    fn member_specs_parse() {
        assert_eq!(parse_member_spec("alice=2"), Ok(("alice".into(), 2)));
        assert!(parse_member_spec("alice").is_err());
        assert!(parse_member_spec("alice=0").is_err());
        assert!(parse_member_spec("alice=-1").is_err());
        assert!(parse_member_spec("=2").is_err());
    }

    proptest! {
        #[test]
        fn parts_always_sum_to_the_price(
            amount in 0_u64..=crate::money::AMOUNT_MINOR_MAX,
            weights in proptest::collection::vec(1_u64..=COALITION_WEIGHT_MAX, 1..=COALITION_MEMBERS_MAX),
        ) {
            let ids: Vec<String> = (0..weights.len()).map(|i| format!("m{i:02}")).collect();
            let pairs: Vec<(&str, u64)> = ids.iter().map(String::as_str).zip(weights.iter().copied()).collect();
            let parts = split_price(amount, &pairs);
            prop_assert_eq!(parts.len(), pairs.len());
            prop_assert_eq!(parts.iter().map(|(_, part)| u128::from(*part)).sum::<u128>(), u128::from(amount));
            // Each part is within one minor unit of its exact share.
            let total: u128 = weights.iter().map(|w| u128::from(*w)).sum();
            for ((_, part), weight) in parts.iter().zip(&weights) {
                let exact_floor = u128::from(amount) * u128::from(*weight) / total;
                prop_assert!(u128::from(*part) == exact_floor || u128::from(*part) == exact_floor + 1);
            }
            // The order the members are given in does not change anyone's part.
            let mut reversed = pairs.clone();
            reversed.reverse();
            let mut again = split_price(amount, &reversed);
            again.reverse();
            prop_assert_eq!(again, parts);
        }
    }
}
