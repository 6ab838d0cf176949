//! A batch (or several combined) reduced to its net effect per keyspace and sent as a few
//! multi-row statements, instead of one statement per operation: each statement is a
//! loopback round trip, and a 1,000-commit push was 2,008 of them (`engine/DESIGN.md`,
//! "Costs").
//!
//! The operations of a batch apply in order, so the reduction keeps what order decides:
//! per key, only the last put or delete counts; a range delete removes what the batch wrote
//! before it in the range, and is sent before everything else of its keyspace; a counter
//! add on a key the batch itself put, deleted or range-deleted becomes a put of the sum,
//! computed here (a put that is not 8 bytes fails the batch with `Error::CorruptCounter`,
//! as on every backend). What is left touches each key once, so the statements of one
//! keyspace commute.

use std::collections::BTreeMap;

use super::write::Applied;
use super::*;

/// What a batch leaves at one key, beyond its range deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Effect {
    Put(Vec<u8>),
    Delete,
    /// A counter add on whatever the key held before the batch.
    Add(i64),
}

/// The net effect of the batch on one keyspace.
#[derive(Debug, Default)]
struct TablePlan {
    /// Sent first, each as one statement (rare: a store's cleanup, not its hot path).
    ranges: Vec<(Vec<u8>, Vec<u8>)>,
    keys: BTreeMap<Vec<u8>, Effect>,
}

impl TablePlan {
    fn in_range(&self, key: &[u8]) -> bool {
        self.ranges
            .iter()
            .any(|(start, end)| start.as_slice() <= key && key < end.as_slice())
    }
}

/// The net effect of a sequence of operations, per keyspace (by keyspace index, so that
/// every transaction takes its row locks in the same order).
#[derive(Debug, Default)]
pub(super) struct Plan {
    tables: BTreeMap<usize, TablePlan>,
}

impl Plan {
    /// Reduces `ops`, applied in order, to their net effect.
    ///
    /// # Errors
    /// `Error::CorruptCounter` for a counter add on a value of the batch's own that is not 8
    /// bytes.
    pub(super) fn new<'a>(ops: impl IntoIterator<Item = BatchOp<'a>>) -> Result<Plan> {
        let mut plan = Plan::default();
        for op in ops {
            match op {
                BatchOp::Put {
                    keyspace,
                    key,
                    value,
                } => {
                    plan.table(keyspace)
                        .keys
                        .insert(key.to_vec(), Effect::Put(value.to_vec()));
                }
                BatchOp::Delete { keyspace, key } => {
                    plan.table(keyspace)
                        .keys
                        .insert(key.to_vec(), Effect::Delete);
                }
                BatchOp::DeleteRange {
                    keyspace,
                    start,
                    end,
                } => {
                    if start < end {
                        let table = plan.table(keyspace);
                        // What the batch wrote in the range before is gone with the range.
                        let doomed: Vec<Vec<u8>> = table
                            .keys
                            .range(start.to_vec()..end.to_vec())
                            .map(|(k, _)| k.clone())
                            .collect();
                        for key in doomed {
                            table.keys.remove(&key);
                        }
                        table.ranges.push((start.to_vec(), end.to_vec()));
                    }
                }
                BatchOp::CounterAdd {
                    keyspace,
                    key,
                    delta,
                } => {
                    let table = plan.table(keyspace);
                    let effect = match table.keys.get(key) {
                        Some(Effect::Put(value)) => match counter::add(Some(value), delta) {
                            Some(sum) => Effect::Put(counter::encode(sum).to_vec()),
                            None => {
                                return Err(Error::CorruptCounter {
                                    key: key.to_vec(),
                                    len: value.len(),
                                })
                            }
                        },
                        Some(Effect::Delete) => Effect::Put(counter::encode(delta).to_vec()),
                        Some(Effect::Add(before)) => Effect::Add(before.wrapping_add(delta)),
                        None if table.in_range(key) => Effect::Put(counter::encode(delta).to_vec()),
                        None => Effect::Add(delta),
                    };
                    table.keys.insert(key.to_vec(), effect);
                }
            }
        }
        Ok(plan)
    }

    fn table(&mut self, keyspace: Keyspace) -> &mut TablePlan {
        self.tables.entry(keyspace.index()).or_default()
    }

    /// Whether the plan changes nothing (an empty batch, or range deletes that are empty).
    pub(super) fn is_empty(&self) -> bool {
        self.tables
            .values()
            .all(|t| t.ranges.is_empty() && t.keys.is_empty())
    }

    /// Sends the plan on `conn`, inside the batch's transaction: per keyspace its range
    /// deletes, its deletes, its puts; then every keyspace's counter adds, last, so that
    /// the counters' row locks (which every concurrent adder of the same counter waits for)
    /// are held only from there to the commit.
    pub(super) fn apply(&self, conn: &mut Conn, tables: &[TableSql]) -> Result<(), Applied> {
        let sql_of = |index: usize| {
            tables.get(index).ok_or_else(|| {
                Applied::Engine(Error::UnknownKeyspace {
                    name: format!("#{index}"),
                })
            })
        };
        for (index, table) in &self.tables {
            let sql = sql_of(*index)?;
            for (start, end) in &table.ranges {
                conn.execute(&sql.delete_range, &[start, end])?;
            }
            let mut deleted: Vec<&[u8]> = Vec::new();
            let (mut keys, mut values): (Vec<&[u8]>, Vec<&[u8]>) = (Vec::new(), Vec::new());
            for (key, effect) in &table.keys {
                match effect {
                    Effect::Put(value) => {
                        keys.push(key);
                        values.push(value);
                    }
                    Effect::Delete => deleted.push(key),
                    Effect::Add(_) => {}
                }
            }
            if !deleted.is_empty() {
                conn.execute(&sql.delete_many, &[&deleted])?;
            }
            if !keys.is_empty() {
                conn.execute(&sql.put_many, &[&keys, &values])?;
            }
        }
        for (index, table) in &self.tables {
            let adds: BTreeMap<&[u8], i64> = table
                .keys
                .iter()
                .filter_map(|(key, effect)| match effect {
                    Effect::Add(delta) => Some((key.as_slice(), *delta)),
                    _ => None,
                })
                .collect();
            if !adds.is_empty() {
                add_counters(conn, sql_of(*index)?, adds)?;
            }
        }
        Ok(())
    }
}

/// Adds to the counters of one keyspace: the present ones are locked (in key order), read,
/// added to and written back in one statement; the absent ones inserted as their delta. An
/// absent counter that another transaction inserted meanwhile is not inserted (`ON CONFLICT
/// DO NOTHING`, which waits for that transaction) and goes round again as a present one, so
/// sums stay exact whoever else adds.
fn add_counters(
    conn: &mut Conn,
    sql: &TableSql,
    mut adds: BTreeMap<&[u8], i64>,
) -> Result<(), Applied> {
    while !adds.is_empty() {
        let keys: Vec<&[u8]> = adds.keys().copied().collect();
        let rows = conn.query(&sql.counter_lock_many, &[&keys])?;
        let (mut present, mut sums): (Vec<Vec<u8>>, Vec<Vec<u8>>) = (Vec::new(), Vec::new());
        for row in rows {
            let key: Vec<u8> = row.try_get(0)?;
            let existing: Vec<u8> = row.try_get(1)?;
            let Some(delta) = adds.remove(key.as_slice()) else {
                continue;
            };
            let Some(sum) = counter::add(Some(&existing), delta) else {
                return Err(Applied::Engine(Error::CorruptCounter {
                    key,
                    len: existing.len(),
                }));
            };
            present.push(key);
            sums.push(counter::encode(sum).to_vec());
        }
        if !present.is_empty() {
            conn.execute(&sql.counter_update_many, &[&present, &sums])?;
        }
        if adds.is_empty() {
            break;
        }
        let absent: Vec<&[u8]> = adds.keys().copied().collect();
        let initial: Vec<Vec<u8>> = adds
            .values()
            .map(|delta| counter::encode(*delta).to_vec())
            .collect();
        for row in conn.query(&sql.counter_insert_many, &[&absent, &initial])? {
            let key: Vec<u8> = row.try_get(0)?;
            adds.remove(key.as_slice());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyspace(index: usize) -> Keyspace {
        let names: Vec<String> = (0..=index).map(|i| format!("k{i}")).collect();
        Keyspace::lookup(&names, &format!("k{index}")).unwrap()
    }

    fn effects(plan: &Plan, index: usize) -> Vec<(Vec<u8>, Effect)> {
        plan.tables[&index]
            .keys
            .iter()
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect()
    }

    #[test]
    fn the_last_write_of_a_key_wins_and_adds_fold() {
        let (a, b) = (keyspace(0), keyspace(1));
        let mut batch = WriteBatch::new();
        batch.put(a, b"x", b"1");
        batch.delete(a, b"x");
        batch.put(a, b"y", b"1");
        batch.put(a, b"y", b"2");
        batch.counter_add(b, b"c", 2);
        batch.counter_add(b, b"c", -5);
        let plan = Plan::new(batch.ops()).unwrap();
        assert_eq!(
            effects(&plan, 0),
            vec![
                (b"x".to_vec(), Effect::Delete),
                (b"y".to_vec(), Effect::Put(b"2".to_vec()))
            ]
        );
        assert_eq!(effects(&plan, 1), vec![(b"c".to_vec(), Effect::Add(-3))]);
    }

    #[test]
    fn a_range_delete_removes_earlier_writes_and_zeroes_later_adds() {
        let a = keyspace(0);
        let mut batch = WriteBatch::new();
        batch.put(a, b"b", b"gone");
        batch.counter_add(a, b"c", 7);
        batch.put(a, b"z", b"kept");
        batch.delete_range(a, b"a", b"m");
        batch.delete_range(a, b"q", b"p"); // inverted: nothing
        batch.counter_add(a, b"c", 3);
        batch.put(a, b"d", b"after");
        let plan = Plan::new(batch.ops()).unwrap();
        assert_eq!(plan.tables[&0].ranges, vec![(b"a".to_vec(), b"m".to_vec())]);
        assert_eq!(
            effects(&plan, 0),
            vec![
                (b"c".to_vec(), Effect::Put(counter::encode(3).to_vec())),
                (b"d".to_vec(), Effect::Put(b"after".to_vec())),
                (b"z".to_vec(), Effect::Put(b"kept".to_vec())),
            ]
        );
    }

    #[test]
    fn an_add_to_a_put_sums_or_refuses_a_value_that_is_no_counter() {
        let a = keyspace(0);
        let mut batch = WriteBatch::new();
        batch.put(a, b"c", counter::encode(i64::MAX));
        batch.counter_add(a, b"c", 1);
        batch.delete(a, b"d");
        batch.counter_add(a, b"d", 4);
        let plan = Plan::new(batch.ops()).unwrap();
        assert_eq!(
            effects(&plan, 0),
            vec![
                (
                    b"c".to_vec(),
                    Effect::Put(counter::encode(i64::MIN).to_vec())
                ),
                (b"d".to_vec(), Effect::Put(counter::encode(4).to_vec())),
            ]
        );
        batch.put(a, b"e", b"abc");
        batch.counter_add(a, b"e", 1);
        assert!(matches!(
            Plan::new(batch.ops()),
            Err(Error::CorruptCounter { len: 3, .. })
        ));
        assert!(Plan::new(WriteBatch::new().ops()).unwrap().is_empty());
    }
}
