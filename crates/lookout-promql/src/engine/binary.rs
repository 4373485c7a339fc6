//! Binary operators: arithmetic, comparisons (with and without `bool`), set operators, and
//! vector matching (`on`/`ignoring`, `group_left`/`group_right`) with Prometheus's errors.

use std::collections::HashSet;

use promql_parser::parser::{BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::binary_histogram::{Note, hist_elem};
use super::cancel::Stop;
use super::{
    Evaluator, FastMap, FnvBuild, QueryError, Sample, Value, Vector, dropped_with_name, label_hash,
};
use crate::labels::{Labels, METRIC_NAME};

/// Per-query memo of vector-matching work repeated at every step: join signatures and
/// result label sets, keyed by node and by the identity of the label sets involved (which
/// are kept alive in the entries).
#[derive(Default)]
pub(crate) struct BinaryMemo {
    signatures: FastMap<(usize, usize), (Labels, u64)>,
    results: FastMap<(usize, usize, usize), (Labels, Labels, HashedLabels)>,
}

/// A label set with its hash computed once (kept in [`BinaryMemo`]), so the per-step
/// check for duplicate results does not rehash every label.
#[derive(Clone, PartialEq, Eq)]
struct HashedLabels(u64, Labels);

impl HashedLabels {
    fn new(metric: Labels) -> HashedLabels {
        use std::hash::BuildHasher;
        HashedLabels(FnvBuild.hash_one(&metric), metric)
    }
}

impl std::hash::Hash for HashedLabels {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0);
    }
}

/// The match groups that matched so far, and (unless matching is one-to-one) each
/// group's result label sets, so a result produced twice in a group is an error.
struct MatchedSets {
    groups: HashSet<u64, FnvBuild>,
    results: HashSet<(u64, HashedLabels), FnvBuild>,
}

/// The binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
    /// `</`: a histogram without its observations above the right-hand side.
    TrimUpper,
    /// `>/`: a histogram without its observations below the right-hand side.
    TrimLower,
}

impl BinOp {
    fn parse(s: &str) -> Option<BinOp> {
        Some(match s.to_ascii_lowercase().as_str() {
            "+" => BinOp::Add,
            "-" => BinOp::Sub,
            "*" => BinOp::Mul,
            "/" => BinOp::Div,
            "%" => BinOp::Mod,
            "^" => BinOp::Pow,
            "atan2" => BinOp::Atan2,
            "==" => BinOp::Eq,
            "!=" => BinOp::Ne,
            ">" => BinOp::Gt,
            "<" => BinOp::Lt,
            ">=" => BinOp::Ge,
            "<=" => BinOp::Le,
            "and" => BinOp::And,
            "or" => BinOp::Or,
            "unless" => BinOp::Unless,
            _ => return None,
        })
    }

    fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Gt | BinOp::Lt | BinOp::Ge | BinOp::Le
        )
    }

    fn is_trim(self) -> bool {
        matches!(self, BinOp::TrimUpper | BinOp::TrimLower)
    }

    fn is_set(self) -> bool {
        matches!(self, BinOp::And | BinOp::Or | BinOp::Unless)
    }

    /// Arithmetic changes what the metric means, so its name goes.
    fn changes_schema(self) -> bool {
        matches!(
            self,
            BinOp::Add
                | BinOp::Sub
                | BinOp::Mul
                | BinOp::Div
                | BinOp::Mod
                | BinOp::Pow
                | BinOp::Atan2
        )
    }
}

/// Go's `math.Mod` (result has the sign of the dividend), which Rust's `%` matches.
fn arith(op: BinOp, l: f64, r: f64) -> f64 {
    match op {
        BinOp::Add => l + r,
        BinOp::Sub => l - r,
        BinOp::Mul => l * r,
        BinOp::Div => l / r,
        BinOp::Mod => l % r,
        BinOp::Pow => go_pow(l, r),
        BinOp::Atan2 => l.atan2(r),
        _ => f64::NAN,
    }
}

/// Go's `math.Pow` special cases where Rust's `powf` differs.
fn go_pow(x: f64, y: f64) -> f64 {
    if y == 0.0 {
        return 1.0;
    }
    if x == 1.0 {
        return 1.0;
    }
    x.powf(y)
}

/// Applies `op` to two floats: the value and whether to keep it (comparisons filter).
fn elem(op: BinOp, l: f64, r: f64) -> (f64, bool) {
    match op {
        BinOp::Eq => (l, l == r),
        BinOp::Ne => (l, l != r),
        BinOp::Gt => (l, l > r),
        BinOp::Lt => (l, l < r),
        BinOp::Ge => (l, l >= r),
        BinOp::Le => (l, l <= r),
        BinOp::TrimUpper | BinOp::TrimLower => (0.0, false),
        _ => (arith(op, l, r), true),
    }
}

/// How two vectors are matched.
struct Matching<'e> {
    /// Memo of signatures and result label sets, per node of the query.
    memo: &'e std::cell::RefCell<BinaryMemo>,
    /// Identity of the binary expression node.
    node: usize,
    /// Whether to keep signatures and result label sets in `memo`: only when the node is
    /// evaluated at more than one time.
    memoize: bool,
    card: Card,
    on: bool,
    labels: Vec<String>,
    /// `group_left`/`group_right` labels, sorted, without repeats.
    include: Vec<String>,
    /// `fill_left(v)`: value for a missing left-hand sample.
    fill_lhs: Option<f64>,
    /// `fill_right(v)`: value for a missing right-hand sample.
    fill_rhs: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Card {
    OneToOne,
    ManyToOne,
    OneToMany,
    ManyToMany,
}

impl Matching<'_> {
    fn from_expr<'e>(
        b: &BinaryExpr,
        op: BinOp,
        memo: &'e std::cell::RefCell<BinaryMemo>,
        memoize: bool,
    ) -> Matching<'e> {
        let (mut card, on, labels, mut include) = match &b.modifier {
            None => (Card::OneToOne, false, vec![], vec![]),
            Some(m) => {
                let (card, include) = match &m.card {
                    VectorMatchCardinality::OneToOne => (Card::OneToOne, vec![]),
                    VectorMatchCardinality::ManyToOne(l) => (Card::ManyToOne, l.labels.clone()),
                    VectorMatchCardinality::OneToMany(l) => (Card::OneToMany, l.labels.clone()),
                    VectorMatchCardinality::ManyToMany => (Card::ManyToMany, vec![]),
                };
                let (on, labels) = match &m.matching {
                    Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
                    Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
                    None => (false, vec![]),
                };
                (card, on, labels, include)
            }
        };
        if op.is_set() {
            card = Card::ManyToMany;
        }
        include.sort();
        include.dedup();
        let (fill_lhs, fill_rhs) = match &b.modifier {
            Some(m) => (m.fill_values.lhs, m.fill_values.rhs),
            None => (None, None),
        };
        Matching {
            memo,
            node: b as *const BinaryExpr as usize,
            memoize,
            card,
            on,
            labels,
            include,
            fill_lhs,
            fill_rhs,
        }
    }

    /// The join key of a series (a hash of the matching labels, as in Prometheus).
    fn signature(&self, l: &Labels) -> u64 {
        if !self.memoize {
            return self.compute_signature(l);
        }
        let mut memo = self.memo.borrow_mut();
        memo.signatures
            .entry((self.node, l.ptr_id()))
            .or_insert_with(|| (l.clone(), self.compute_signature(l)))
            .1
    }

    fn compute_signature(&self, l: &Labels) -> u64 {
        if self.on {
            label_hash(l, |k| self.labels.iter().any(|x| x == k))
        } else {
            label_hash(l, |k| {
                k != METRIC_NAME && !self.labels.iter().any(|x| x == k)
            })
        }
    }

    /// The labels a match group is shown with in errors.
    fn match_labels(&self, l: &Labels) -> Labels {
        let mut out = l.clone();
        if self.on {
            out.retain(|k, _| self.labels.iter().any(|x| x == k));
        } else {
            out.retain(|k, _| k != METRIC_NAME && !self.labels.iter().any(|x| x == k));
        }
        out
    }
}

impl Evaluator<'_> {
    pub(crate) fn eval_binary(&self, b: &BinaryExpr, ts: i64) -> Result<Value, QueryError> {
        let op_text = b.op.to_string();
        let op = BinOp::parse(&op_text)
            .ok_or_else(|| QueryError::eval(format!("unknown binary operator {op_text:?}")))?;
        let op = match (op, trim_marker(&b.lhs)) {
            (BinOp::Lt, Some("upper")) => BinOp::TrimUpper,
            (BinOp::Gt, Some("lower")) => BinOp::TrimLower,
            (op, _) => op,
        };
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let lhs = self.eval(&b.lhs, ts)?;
        let rhs = self.eval(&b.rhs, ts)?;
        match (lhs, rhs) {
            (Value::Scalar { v: l, .. }, Value::Scalar { v: r, .. }) => {
                let v = if op.is_comparison() {
                    let (_, keep) = elem(op, l, r);
                    if keep { 1.0 } else { 0.0 }
                } else {
                    arith(op, l, r)
                };
                Ok(Value::Scalar { t: ts, v })
            }
            (Value::Vector(l), Value::Scalar { v: r, .. }) => {
                let mut notes = Vec::new();
                let v = vector_scalar(op, l, (r, false), return_bool, self.stop(), &mut notes)?;
                self.binary_notes(notes, b);
                Ok(Value::Vector(v))
            }
            (Value::Scalar { v: l, .. }, Value::Vector(r)) => {
                let mut notes = Vec::new();
                let v = vector_scalar(op, r, (l, true), return_bool, self.stop(), &mut notes)?;
                self.binary_notes(notes, b);
                Ok(Value::Vector(v))
            }
            (Value::Vector(l), Value::Vector(r)) => {
                let matching = Matching::from_expr(b, op, &self.binary_memo, !self.evaluates_once);
                let stop = self.stop();
                let out = match op {
                    BinOp::And => vector_set(l, r, &matching, SetOp::And, stop)?,
                    BinOp::Or => vector_or(l, r, &matching, stop)?,
                    BinOp::Unless => vector_set(l, r, &matching, SetOp::Unless, stop)?,
                    _ => {
                        let mut notes = Vec::new();
                        let v = vector_binop(
                            op,
                            l,
                            r,
                            &matching,
                            (return_bool, self.stop()),
                            &mut notes,
                        )?;
                        self.binary_notes(notes, b);
                        v
                    }
                };
                Ok(Value::Vector(out))
            }
            (l, r) => Err(QueryError::eval(format!(
                "binary expression must contain only scalar and instant vector types, got {} and {}",
                l.type_name(),
                r.type_name()
            ))),
        }
    }
}

/// Whether `b` is a trim operator (`</`, `>/`, carried as a marked comparison).
pub(crate) fn is_trim_expr(b: &BinaryExpr) -> bool {
    let op = b.op.to_string();
    matches!(
        (op.as_str(), trim_marker(&b.lhs)),
        ("<", Some("upper")) | (">", Some("lower"))
    )
}

/// The trim marker of a left-hand selector (see [`super::rewrite::TRIM_LABEL`]).
fn trim_marker(e: &promql_parser::parser::Expr) -> Option<&str> {
    let promql_parser::parser::Expr::VectorSelector(vs) = e else {
        return None;
    };
    vs.matchers
        .matchers
        .iter()
        .find(|m| m.name == super::rewrite::TRIM_LABEL)
        .map(|m| m.value.as_str())
}

impl Evaluator<'_> {
    /// Raises the annotations of a binary operation (at its left-hand side).
    fn binary_notes(&self, notes: Vec<Note>, b: &BinaryExpr) {
        if notes.is_empty() {
            return;
        }
        let anchor = b.lhs.to_string();
        for (level, text) in notes {
            self.annotate(level, text, &anchor);
        }
    }
}

/// `vector op scalar` (`scalar op vector` when `swap`).
fn vector_scalar(
    op: BinOp,
    vec: Vector,
    (scalar, swap): (f64, bool),
    return_bool: bool,
    stop: &Stop,
    notes: &mut Vec<Note>,
) -> Result<Vector, QueryError> {
    let mut out = Vec::with_capacity(vec.len());
    for mut s in vec {
        stop.check()?;
        if s.h.is_some() || op.is_trim() {
            let h = s.h.take();
            let (l, r) = if swap {
                ((scalar, None), (s.f, h.as_ref()))
            } else {
                ((s.f, h.as_ref()), (scalar, None))
            };
            let mut e = match hist_elem(op, l, r, notes) {
                Ok(e) => e,
                Err(n) => {
                    notes.push(n);
                    continue;
                }
            };
            if op.is_comparison() && swap {
                e.h = h.clone();
            }
            if return_bool {
                e.f = if e.keep { 1.0 } else { 0.0 };
                e.h = None;
                e.keep = true;
            }
            if e.keep {
                s.f = e.f;
                s.h = e.h;
                if op.changes_schema() || return_bool {
                    s.drop_name = true;
                }
                out.push(s);
            }
            continue;
        }
        let (l, r) = if swap { (scalar, s.f) } else { (s.f, scalar) };
        let (mut v, mut keep) = elem(op, l, r);
        if op.is_comparison() && swap {
            v = r;
        }
        if return_bool {
            v = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if keep {
            s.f = v;
            if op.changes_schema() || return_bool {
                s.drop_name = true;
            }
            out.push(s);
        }
    }
    Ok(out)
}

/// `and` or `unless`: the samples of `l` whose match group is (not) on the right.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SetOp {
    And,
    Unless,
}

/// The match-group signatures of `v`, polling `stop` per sample.
fn signatures(v: &Vector, m: &Matching, stop: &Stop) -> Result<HashSet<u64, FnvBuild>, QueryError> {
    let mut out = HashSet::with_capacity_and_hasher(v.len(), FnvBuild);
    for s in v {
        stop.check()?;
        out.insert(m.signature(&s.metric));
    }
    Ok(out)
}

fn vector_set(
    l: Vector,
    r: Vector,
    m: &Matching,
    op: SetOp,
    stop: &Stop,
) -> Result<Vector, QueryError> {
    if l.is_empty() || r.is_empty() {
        return Ok(if op == SetOp::And { Vec::new() } else { l });
    }
    let right = signatures(&r, m, stop)?;
    let mut out = Vec::with_capacity(l.len());
    for s in l {
        stop.check()?;
        if right.contains(&m.signature(&s.metric)) == (op == SetOp::And) {
            out.push(s);
        }
    }
    Ok(out)
}

fn vector_or(l: Vector, r: Vector, m: &Matching, stop: &Stop) -> Result<Vector, QueryError> {
    if l.is_empty() {
        return Ok(r);
    }
    if r.is_empty() {
        return Ok(l);
    }
    let left = signatures(&l, m, stop)?;
    let mut out = l;
    for s in r {
        stop.check()?;
        if !left.contains(&m.signature(&s.metric)) {
            out.push(s);
        }
    }
    Ok(out)
}

fn vector_binop(
    op: BinOp,
    lhs: Vector,
    rhs: Vector,
    m: &Matching,
    (return_bool, stop): (bool, &Stop),
    notes: &mut Vec<Note>,
) -> Result<Vector, QueryError> {
    if (lhs.is_empty() && rhs.is_empty())
        || ((lhs.is_empty() || rhs.is_empty()) && m.fill_lhs.is_none() && m.fill_rhs.is_none())
    {
        return Ok(Vec::new());
    }
    // One-to-many is many-to-one with the sides swapped; values are swapped back below.
    let swapped = m.card == Card::OneToMany;
    let (lhs, rhs) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    // As in Prometheus, the fill values apply to the sides after the swap.
    let (fill_for_missing_rhs, fill_for_missing_lhs) = (m.fill_rhs, m.fill_lhs);
    let mut right: FastMap<u64, &Sample> = FastMap::default();
    let mut right_order: Vec<u64> = Vec::with_capacity(rhs.len());
    for rs in &rhs {
        stop.check()?;
        let sig = m.signature(&rs.metric);
        if let Some(dup) = right.get(&sig) {
            let side = if swapped { "left" } else { "right" };
            return Err(QueryError::eval(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                m.match_labels(&rs.metric).to_braced_string(),
                dup.metric.to_braced_string(),
                rs.metric.to_braced_string(),
            )));
        }
        right.insert(sig, rs);
        right_order.push(sig);
    }
    let mut matched = MatchedSets {
        groups: HashSet::with_capacity_and_hasher(rhs.len(), FnvBuild),
        results: HashSet::with_capacity_and_hasher(
            if m.card == Card::OneToOne {
                0
            } else {
                lhs.len()
            },
            FnvBuild,
        ),
    };
    let mut out = Vec::new();
    let ctx = OpCtx {
        op,
        m,
        return_bool,
        swapped,
        notes: std::cell::RefCell::new(std::mem::take(notes)),
    };
    for ls in &lhs {
        stop.check()?;
        let sig = m.signature(&ls.metric);
        match right.get(&sig) {
            Some(rs) => ctx.apply(ls, rs, sig, &mut matched, &mut out)?,
            None => {
                if let Some(fill) = fill_for_missing_rhs {
                    let rs = Sample {
                        metric: m.match_labels(&ls.metric),
                        t: ls.t,
                        f: fill,
                        drop_name: false,
                        h: None,
                    };
                    ctx.apply(ls, &rs, sig, &mut matched, &mut out)?;
                }
            }
        }
    }
    if let Some(fill) = fill_for_missing_lhs {
        for sig in right_order {
            if matched.groups.contains(&sig) {
                continue;
            }
            let Some(rs) = right.get(&sig) else { continue };
            let ls = Sample {
                metric: m.match_labels(&rs.metric),
                t: rs.t,
                f: fill,
                drop_name: false,
                h: None,
            };
            ctx.apply(&ls, rs, sig, &mut matched, &mut out)?;
        }
    }
    *notes = ctx.notes.into_inner();
    Ok(out)
}

struct OpCtx<'m> {
    op: BinOp,
    m: &'m Matching<'m>,
    return_bool: bool,
    swapped: bool,
    /// Annotations raised by operations on histograms.
    notes: std::cell::RefCell<Vec<Note>>,
}

impl OpCtx<'_> {
    fn apply(
        &self,
        ls: &Sample,
        rs: &Sample,
        sig: u64,
        matched: &mut MatchedSets,
        out: &mut Vector,
    ) -> Result<(), QueryError> {
        let (op, m, return_bool, swapped) = (self.op, self.m, self.return_bool, self.swapped);
        let (fl, fr) = if swapped { (rs.f, ls.f) } else { (ls.f, rs.f) };
        let (mut v, keep, mut h) = if ls.h.is_some() || rs.h.is_some() || op.is_trim() {
            let (hl, hr) = if swapped {
                (rs.h.as_ref(), ls.h.as_ref())
            } else {
                (ls.h.as_ref(), rs.h.as_ref())
            };
            let mut notes = self.notes.borrow_mut();
            match hist_elem(op, (fl, hl), (fr, hr), &mut notes) {
                Ok(e) => (e.f, e.keep, e.h),
                Err(n) => {
                    notes.push(n);
                    return Ok(());
                }
            }
        } else {
            let (v, keep) = elem(op, fl, fr);
            (v, keep, None)
        };
        if return_bool {
            v = if keep { 1.0 } else { 0.0 };
            h = None;
        }
        let metric = if m.memoize {
            let mut memo = m.memo.borrow_mut();
            memo.results
                .entry((m.node, ls.metric.ptr_id(), rs.metric.ptr_id()))
                .or_insert_with(|| {
                    let metric = result_metric(&ls.metric, &rs.metric, op, m);
                    (
                        ls.metric.clone(),
                        rs.metric.clone(),
                        HashedLabels::new(metric),
                    )
                })
                .2
                .clone()
        } else {
            HashedLabels::new(result_metric(&ls.metric, &rs.metric, op, m))
        };
        let first_in_group = matched.groups.insert(sig);
        if !first_in_group && m.card == Card::OneToOne {
            return Err(QueryError::eval(
                "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
            ));
        }
        // One-to-one matching only asks whether the group matched before.
        if m.card != Card::OneToOne && !matched.results.insert((sig, metric.clone())) {
            return Err(QueryError::eval(
                "multiple matches for labels: grouping labels must ensure unique matches",
            ));
        }
        if keep || return_bool {
            out.push(Sample {
                metric: metric.1,
                t: ls.t,
                f: v,
                drop_name: return_bool || (!op.changes_schema() && ls.drop_name),
                h,
            });
        }
        Ok(())
    }
}

/// The labels of a result: the left-hand side's, without the metric name when `op`
/// changes what the metric means, only the matching labels for one-to-one `on` (without
/// them for `ignoring`), and the `group_left`/`group_right` labels taken from the
/// right-hand side (removed where it has none). Built in one pass and one allocation.
fn result_metric(lhs: &Labels, rhs: &Labels, op: BinOp, m: &Matching) -> Labels {
    let drop_name = op.changes_schema();
    let one_to_one = m.card == Card::OneToOne;
    let kept = lhs.iter().filter(|&(k, _)| {
        if drop_name && dropped_with_name(k) {
            return false;
        }
        !one_to_one || m.on == m.labels.iter().any(|x| x == k)
    });
    let included = m
        .include
        .iter()
        .map(|name| (name.as_str(), rhs.get(name).unwrap_or("")));
    Labels::merged(kept, included)
}
