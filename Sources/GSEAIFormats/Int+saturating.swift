extension Int {
    /// `self + other`, or the nearest bound when that overflows: for totals of numbers from outside (token
    /// counts an upstream reports), which must never stop the process.
    @inlinable
    public func addingSaturated(_ other: Int) -> Int {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : sum
    }
}
