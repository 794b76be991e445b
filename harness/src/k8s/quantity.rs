//! Kubernetes resource quantities as numbers: CPU in millicores, memory in bytes.

/// Millicores of a CPU quantity (`"10"` → 10000, `"500m"` → 500, `"1.5"` → 1500); `None` if unreadable.
pub fn millicores(quantity: &str) -> Option<i64> {
    let q = quantity.trim();
    if let Some(m) = q.strip_suffix('m') {
        return m.parse::<f64>().ok().map(|v| v.round() as i64);
    }
    q.parse::<f64>().ok().map(|v| (v * 1000.0).round() as i64)
}

/// Bytes of a memory quantity (`"20Gi"`, `"24683652Ki"`, `"512M"`, `"1e9"`); `None` if unreadable.
pub fn bytes(quantity: &str) -> Option<i64> {
    let q = quantity.trim();
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (suffix, factor) in SUFFIXES {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|v| (v * factor) as i64);
        }
    }
    q.parse::<f64>().ok().map(|v| v as i64)
}

/// `1500` millicores as a quantity: `"1500m"`.
pub fn format_millicores(millis: i64) -> String {
    format!("{millis}m")
}

/// Bytes as a quantity in whole mebibytes: `"2048Mi"`.
pub fn format_mebibytes(bytes: i64) -> String {
    format!("{}Mi", bytes / 1048576)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(millicores("10"), Some(10000));
        assert_eq!(millicores("500m"), Some(500));
        assert_eq!(millicores("1.5"), Some(1500));
        assert_eq!(millicores("x"), None);
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(bytes("20Gi"), Some(20 * 1073741824));
        assert_eq!(bytes("24683652Ki"), Some(24683652 * 1024));
        assert_eq!(bytes("512M"), Some(512_000_000));
        assert_eq!(bytes("128974848"), Some(128974848));
        assert_eq!(bytes("lots"), None);
        assert_eq!(format_mebibytes(3 * 1073741824), "3072Mi");
    }
}
