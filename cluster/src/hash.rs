//! Stable hashing: which shard an id is in, and which live member should own
//! a shard. Both must give the same answer on every node and in every build,
//! so neither uses std's randomly seeded hasher: an id is hashed through its
//! postcard bytes with FNV-1a, and the result is mixed with splitmix64's
//! finalizer so that nearby inputs spread evenly.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a of `bytes`, then splitmix64's finalizer.
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    mix(h)
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The shard of an id whose postcard encoding is `id_bytes`.
pub(crate) fn shard_of(id_bytes: &[u8], shards: u32) -> u32 {
    (stable_hash(id_bytes) % u64::from(shards)) as u32
}

/// The member that should own `shard`: the highest score of
/// (member, shard) wins (rendezvous hashing), so a member joining or leaving
/// moves only the shards it wins or held. Ties (astronomically rare) go to
/// the smaller name, so every node still agrees.
pub(crate) fn rendezvous<'a>(
    shard: u32,
    members: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    members
        .into_iter()
        .map(|m| {
            let mut bytes = Vec::with_capacity(m.len() + 4);
            bytes.extend_from_slice(m.as_bytes());
            bytes.extend_from_slice(&shard.to_le_bytes());
            (stable_hash(&bytes), m)
        })
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
        .map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shard_of_an_id_is_the_same_in_every_build() {
        // Fixed values: a change here would move every id of a running
        // cluster to another shard.
        assert_eq!(stable_hash(b""), mix(FNV_OFFSET));
        assert_eq!(
            shard_of(&postcard::to_stdvec(&42u64).unwrap(), 64),
            shard_of(&[42], 64)
        );
        assert_eq!(stable_hash(b"gen_registry"), 12_307_760_969_578_100_379);
    }

    #[test]
    fn rendezvous_moves_only_the_shards_a_joining_member_wins() {
        let before = ["a", "b", "c"];
        let after = ["a", "b", "c", "d"];
        let mut moved = 0;
        for shard in 0..1024 {
            let old = rendezvous(shard, before).unwrap();
            let new = rendezvous(shard, after).unwrap();
            if old != new {
                assert_eq!(new, "d", "shard {shard} moved between old members");
                moved += 1;
            }
        }
        // About a quarter of the shards move to the new member.
        assert!((150..360).contains(&moved), "{moved} of 1024 moved");
    }

    #[test]
    fn rendezvous_of_no_members_is_none() {
        assert_eq!(rendezvous(3, []), None);
    }
}
