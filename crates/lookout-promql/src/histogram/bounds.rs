//! Bucket boundaries and the walk over all buckets in ascending order.

use super::{Bucket, FloatHistogram};

/// One bucket with its boundaries, as the bucket walks return them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketRange {
    /// Lower boundary (exclusive, except for the zero bucket).
    pub lower: f64,
    /// Upper boundary (inclusive).
    pub upper: f64,
    /// Observations in the bucket.
    pub count: f64,
}

/// Which part of a histogram a bucket is in, which says which of its boundaries are
/// inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketSide {
    /// A negative bucket: `[lower, upper)`.
    Negative,
    /// The zero bucket: `[-threshold, threshold]`.
    Zero,
    /// A positive (or custom) bucket: `(lower, upper]`.
    Positive,
}

impl BucketSide {
    /// The boundary rule of Prometheus's query API: 0 `(lower, upper]`, 1 `[lower, upper)`,
    /// 3 `[lower, upper]` (2, both open, no bucket has).
    pub fn boundary_rule(self) -> u8 {
        match self {
            BucketSide::Positive => 0,
            BucketSide::Negative => 1,
            BucketSide::Zero => 3,
        }
    }
}

/// Prometheus's bucket boundaries in `[0.5, 1)` at schema 8 (`exponentialBounds` in
/// `model/histogram/generic.go`; client_golang buckets observations with the same table):
/// entry `k` is about `2^(k/256) / 2`, and schema `s` uses every `2^(8-s)`th entry. These are
/// Prometheus's numbers, not the correctly rounded powers of two (178 of the 256 differ from
/// those by one to four units in the last place), so they are kept as data: a boundary
/// computed any other way would differ from the one Prometheus writes in its API.
#[rustfmt::skip]
const FRACTIONS: [f64; 256] = [
    0.5, 0.5013556375251013, 0.5027149505564014, 0.5040779490592088,
    0.5054446430258502, 0.5068150424757447, 0.5081891574554764, 0.509566998038869,
    0.5109485743270583, 0.5123338964485679, 0.5137229745593818, 0.5151158188430205,
    0.5165124395106142, 0.5179128468009786, 0.5193170509806894, 0.520725062344158,
    0.5221368912137069, 0.5235525479396449, 0.5249720429003435, 0.526395386502313,
    0.5278225891802786, 0.5292536613972564, 0.5306886136446309, 0.5321274564422321,
    0.5335702003384117, 0.5350168559101208, 0.5364674337629877, 0.5379219445313954,
    0.5393803988785598, 0.5408428074966075, 0.5423091811066545, 0.5437795304588847,
    0.5452538663326288, 0.5467321995364429, 0.5482145409081883, 0.549700901315111,
    0.5511912916539204, 0.5526857228508706, 0.5541842058618393, 0.5556867516724088,
    0.5571933712979462, 0.5587040757836845, 0.5602188762048033, 0.5617377836665098,
    0.5632608093041209, 0.564787964283144, 0.5663192597993595, 0.5678547070789026,
    0.5693943173783458, 0.5709381019847808, 0.572486072215902, 0.5740382394200894,
    0.5755946149764913, 0.5771552102951081, 0.5787200368168754, 0.5802891060137493,
    0.5818624293887887, 0.5834400184762408, 0.585021884841625, 0.5866080400818185,
    0.5881984958251406, 0.5897932637314379, 0.5913923554921704, 0.5929957828304968,
    0.5946035575013605, 0.5962156912915756, 0.5978321960199137, 0.5994530835371903,
    0.6010783657263515, 0.6027080545025619, 0.6043421618132907, 0.6059806996384005,
    0.6076236799902344, 0.6092711149137041, 0.6109230164863786, 0.6125793968185725,
    0.6142402680534349, 0.6159056423670379, 0.6175755319684665, 0.6192499490999082,
    0.620928906036742, 0.622612415087629, 0.6243004885946023, 0.6259931389331581,
    0.6276903785123455, 0.6293922197748583, 0.6310986751971253, 0.6328097572894031,
    0.6345254785958666, 0.6362458516947014, 0.637970889198196, 0.6397006037528346,
    0.6414350080393891, 0.6431741147730128, 0.6449179367033329, 0.6466664866145447,
    0.6484197773255048, 0.6501778216898253, 0.6519406325959679, 0.6537082229673385,
    0.6554806057623822, 0.6572577939746774, 0.659039800633032, 0.6608266388015788,
    0.6626183215798706, 0.6644148621029772, 0.6662162735415805, 0.6680225691020727,
    0.6698337620266515, 0.6716498655934177, 0.6734708931164728, 0.6752968579460171,
    0.6771277734684463, 0.6789636531064505, 0.6808045103191123, 0.6826503586020058,
    0.6845012114872953, 0.6863570825438342, 0.688217985377265, 0.690083933630119,
    0.6919549409819159, 0.6938310211492645, 0.6957121878859629, 0.6975984549830999,
    0.6994898362691555, 0.7013863456101023, 0.7032879969095076, 0.7051948041086352,
    0.7071067811865475, 0.7090239421602076, 0.7109463010845827, 0.7128738720527471,
    0.7148066691959849, 0.7167447066838943, 0.718687998724491, 0.7206365595643126,
    0.7225904034885232, 0.7245495448210174, 0.7265139979245261, 0.7284837772007218,
    0.7304588970903234, 0.7324393720732029, 0.7344252166684908, 0.7364164454346837,
    0.7384130729697496, 0.7404151139112358, 0.7424225829363761, 0.7444354947621984,
    0.7464538641456323, 0.7484777058836176, 0.7505070348132126, 0.7525418658117031,
    0.7545822137967112, 0.7566280937263048, 0.7586795205991071, 0.7607365094544071,
    0.762799075372269, 0.7648672334736434, 0.7669409989204777, 0.7690203869158282,
    0.7711054127039704, 0.7731960915705107, 0.7752924388424999, 0.7773944698885442,
    0.7795022001189185, 0.7816156449856788, 0.7837348199827764, 0.7858597406461707,
    0.7879904225539431, 0.7901268813264122, 0.7922691326262467, 0.7944171921585818,
    0.7965710756711334, 0.7987307989543135, 0.8008963778413465, 0.8030678282083853,
    0.805245165974627, 0.8074284071024302, 0.8096175675974316, 0.8118126635086642,
    0.8140137109286738, 0.8162207259936375, 0.8184337248834821, 0.820652723822003,
    0.8228777390769823, 0.8251087869603088, 0.8273458838280969, 0.8295890460808079,
    0.8318382901633681, 0.8340936325652911, 0.8363550898207981, 0.8386226785089391,
    0.8408964152537144, 0.8431763167241966, 0.8454623996346523, 0.8477546807446661,
    0.8500531768592616, 0.8523579048290255, 0.8546688815502312, 0.8569861239649629,
    0.8593096490612387, 0.8616394738731368, 0.8639756154809185, 0.8663180910111553,
    0.8686669176368529, 0.871022112577578, 0.8733836930995842, 0.8757516765159389,
    0.8781260801866495, 0.8805069215187917, 0.8828942179666361, 0.8852879870317771,
    0.8876882462632604, 0.890095013257712, 0.8925083056594671, 0.8949281411607002,
    0.8973545375015533, 0.8997875124702672, 0.9022270839033115, 0.9046732696855155,
    0.9071260877501991, 0.909585556079304, 0.9120516927035263, 0.9145245157024483,
    0.9170040432046711, 0.9194902933879467, 0.9219832844793128, 0.9244830347552253,
    0.9269895625416926, 0.92950288621441, 0.9320230241988943, 0.9345499949706191,
    0.9370838170551498, 0.93962450902828, 0.9421720895161669, 0.9447265771954693,
    0.9472879907934827, 0.9498563490882775, 0.9524316709088368, 0.9550139751351947,
    0.9576032806985735, 0.9601996065815236, 0.9628029718180622, 0.9654133954938133,
    0.9680308967461471, 0.9706554947643201, 0.9732872087896164, 0.9759260581154889,
    0.9785720620876999, 0.9812252401044634, 0.9838856116165875, 0.9865531961276168,
    0.9892280131939752, 0.9919100824251095, 0.9945994234836328, 0.9972960560854698,
];

/// `frac · 2^exp`, rounded once to the nearest float (ties to even), as Go's `math.Ldexp`:
/// subnormal results keep their bits down to 2^-1074, and results below 2^-1075 are 0.
/// `frac` is in `[0.5, 1]`.
fn ldexp(frac: f64, exp: i64) -> f64 {
    // 2^e for a normal exponent (-1022..=1023): exact.
    let pow2 = |e: i64| f64::from_bits(((e + 1023) as u64) << 52);
    match exp {
        e if e > 2046 => f64::INFINITY,
        // The first product is exact; the second rounds (to infinity past the largest float).
        e if e > 1023 => frac * pow2(1023) * pow2(e - 1023),
        e if e >= -1022 => frac * pow2(e),
        // Exact into the normal range, then one rounding into the subnormal range.
        e if e >= -1075 => frac * pow2(e + 53) * pow2(-53),
        _ => 0.0,
    }
}

/// Upper bound of bucket `index` in an exponential `schema`, as Prometheus's `getBound`:
/// `2^(index / 2^schema)` from [`FRACTIONS`], down to the smallest subnormal float; the last
/// bucket of regular numbers ends at the largest float.
fn exponential_upper(index: i32, schema: i32) -> f64 {
    // Validation keeps schemas in range; clamping keeps the shifts defined regardless.
    let schema = schema.clamp(super::MIN_SCHEMA, super::MAX_SCHEMA);
    if schema < 0 {
        let exp = i64::from(index) << (-schema);
        if exp == 1024 {
            return f64::MAX;
        }
        return ldexp(1.0, exp);
    }
    let idx = i64::from(index);
    let frac = FRACTIONS[((idx & ((1 << schema) - 1)) << (8 - schema)) as usize];
    let exp = (idx >> schema) + 1;
    if frac == 0.5 && exp == 1025 {
        return f64::MAX;
    }
    ldexp(frac, exp)
}

/// Upper bound of positive bucket `index` of a histogram with `schema` and `custom` bounds.
pub fn bucket_upper(index: i32, schema: i32, custom: &[f64]) -> f64 {
    if schema == super::CUSTOM_BUCKETS_SCHEMA {
        return match usize::try_from(index) {
            Ok(i) if i < custom.len() => custom[i],
            Ok(_) => f64::INFINITY,
            Err(_) => f64::NEG_INFINITY,
        };
    }
    exponential_upper(index, schema)
}

impl FloatHistogram {
    /// Upper bound of positive bucket `index`.
    pub fn upper(&self, index: i32) -> f64 {
        bucket_upper(index, self.schema, &self.custom_values)
    }

    /// Lower bound of positive bucket `index`.
    pub fn lower(&self, index: i32) -> f64 {
        bucket_upper(index.saturating_sub(1), self.schema, &self.custom_values)
    }

    pub(crate) fn positive_range(&self, b: &Bucket) -> BucketRange {
        BucketRange {
            lower: self.lower(b.index),
            upper: self.upper(b.index),
            count: b.count,
        }
    }

    pub(crate) fn negative_range(&self, b: &Bucket) -> BucketRange {
        BucketRange {
            lower: -self.upper(b.index),
            upper: -self.lower(b.index),
            count: b.count,
        }
    }

    /// Calls `f` with every bucket in ascending order, without allocating: negative, the
    /// zero bucket (when it holds observations), positive. Bucket boundaries inside the
    /// zero bucket are clamped to the zero threshold, as Prometheus's
    /// `AllBucketIterator` does (as Prometheus 3 does: 2.42 also clamps a boundary of
    /// exactly 0, which only the lowest bucket of a schema has).
    pub fn for_each_bucket(&self, mut f: impl FnMut(BucketSide, BucketRange)) {
        let zt = self.zero_threshold;
        for b in self.negative.iter().rev() {
            let mut r = self.negative_range(b);
            if r.upper < 0.0 && r.upper > -zt {
                r.upper = -zt;
            }
            f(BucketSide::Negative, r);
        }
        if self.zero_count > 0.0 {
            let r = BucketRange {
                lower: -zt,
                upper: zt,
                count: self.zero_count,
            };
            f(BucketSide::Zero, r);
        }
        for b in &self.positive {
            let mut r = self.positive_range(b);
            if r.lower > 0.0 && r.lower < zt {
                r.lower = zt;
            }
            f(BucketSide::Positive, r);
        }
    }

    /// All buckets in ascending order (see [`FloatHistogram::for_each_bucket`]).
    pub fn all_buckets(&self) -> Vec<BucketRange> {
        let mut out = Vec::with_capacity(self.positive.len() + self.negative.len() + 1);
        self.for_each_bucket(|_, r| out.push(r));
        out
    }

    /// [`FloatHistogram::all_buckets`] in descending order.
    pub fn all_buckets_rev(&self) -> Vec<BucketRange> {
        let mut v = self.all_buckets();
        v.reverse();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The float with bit pattern `n`: `n · 2^-1074` for subnormals.
    fn sub(n: u64) -> f64 {
        f64::from_bits(n)
    }

    #[test]
    fn bounds_reach_the_smallest_subnormal_as_prometheus_get_bound() {
        // Schema 0: bucket i ends at 2^i; 2^-1075 is a tie that rounds to 0 (even).
        assert_eq!(exponential_upper(-1022, 0), f64::MIN_POSITIVE);
        assert_eq!(exponential_upper(-1023, 0), f64::MIN_POSITIVE / 2.0);
        assert_eq!(exponential_upper(-1073, 0), sub(2));
        assert_eq!(exponential_upper(-1074, 0), sub(1));
        assert_eq!(exponential_upper(-1075, 0), 0.0);
        assert_eq!(exponential_upper(-1076, 0), 0.0);
        // Negative schemas: 2^(i·16) at schema -4.
        assert_eq!(exponential_upper(-66, -4), sub(1 << 18));
        assert_eq!(exponential_upper(-67, -4), sub(4));
        assert_eq!(exponential_upper(-68, -4), 0.0);
        // Schema 8 near the bottom: the lowest valid index ends at 2^-1074 and so do the
        // 255 below it (each is above 2^-1075 and rounds up), the next is the tie at 2^-1075.
        let (lo, _) = crate::histogram::exponential_index_range(8);
        assert_eq!(lo, -274_944);
        assert_eq!(exponential_upper(lo, 8), sub(1));
        assert_eq!(exponential_upper(lo - 1, 8), sub(1));
        assert_eq!(exponential_upper(lo - 255, 8), sub(1));
        assert_eq!(exponential_upper(lo - 256, 8), 0.0);
        // 2^(-1064 + 128/256) = 0.7071067811865475 · 2^-1063 = 1448.15… · 2^-1074.
        assert_eq!(exponential_upper(-1064 * 256 + 128, 8), sub(1448));
        assert_eq!(exponential_upper(-1022 * 256, 8), f64::MIN_POSITIVE);
    }

    #[test]
    fn bounds_at_the_top_and_the_fraction_table() {
        for s in super::super::MIN_SCHEMA..=super::super::MAX_SCHEMA {
            let (_, hi) = crate::histogram::exponential_index_range(s);
            assert_eq!(exponential_upper(hi - 1, s), f64::MAX, "schema {s}");
            assert_eq!(exponential_upper(hi, s), f64::INFINITY, "schema {s}");
        }
        // Ascending, within four units in the last place of 2^(k/256) / 2.
        for k in 0..256 {
            let exact = 2f64.powf(k as f64 / 256.0) / 2.0;
            let ulps = (FRACTIONS[k].to_bits() as i64 - exact.to_bits() as i64).abs();
            assert!(ulps <= 4, "entry {k}: {ulps} ulps");
            assert!(k == 0 || FRACTIONS[k] > FRACTIONS[k - 1]);
        }
        // Bounds Prometheus 2.42 wrote in its query API for a schema-3 histogram (also in
        // the remote-mode reader's tests): some are not the correctly rounded powers.
        assert_eq!(exponential_upper(-7, 3), 0.5452538663326288);
        assert_eq!(exponential_upper(-1, 3), 0.9170040432046711);
        assert_eq!(exponential_upper(1, 3), 1.0905077326652577);
        assert_eq!(exponential_upper(2, 3), 1.189207115002721);
        assert_eq!(exponential_upper(6, 3), 1.6817928305074288);
        assert_ne!(1.6817928305074288, 2f64.powf(0.75));
        assert_eq!(exponential_upper(9, 3), 2.1810154653305154);
        // √2 at schema 1: a unit in the last place below the correctly rounded one.
        let sqrt2 = f64::from_bits(std::f64::consts::SQRT_2.to_bits() - 1);
        assert_eq!(exponential_upper(1, 1), sqrt2);
        assert_eq!(exponential_upper(3, -1), 64.0);
    }
}
