extension ConfiguredStream {
    /// The columns the catalog selects (`json_schema.properties`), checked against the relation
    /// before anything is read or created: each must be a column of it (CDC's `_ab_cdc_*` aside),
    /// and at least one must be selected. Nil selects every column.
    func checkedColumns(of ds: DiscoveredStream) throws(InputError) -> [DiscoveredStream.Column]? {
        guard let selected = selectedColumns else { return nil }
        let byName = Dictionary(ds.columns.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        let names = selected.filter { !$0.hasPrefix("_ab_cdc_") }
        let unknown = names.filter { byName[$0] == nil }
        let file = location?.file ?? "catalog"
        let path = location?.propertiesPath ?? "streams[0].stream.json_schema.properties"
        let known = ds.columns.prefix(20).map { "\"\($0.name)\"" }.joined(separator: ", ") + (ds.columns.count > 20 ? ", …" : "")
        if !unknown.isEmpty {
            let list = unknown.map { "\"\($0)\"" }.joined(separator: ", ")
            throw InputError(file: file, path: path, reason: "names \(unknown.count == 1 ? "column" : "columns") \(list), which \(id) does not have (dropped or renamed? its columns are \(known)); run discover again and select from those")
        }
        if names.isEmpty {
            throw InputError(file: file, path: path, reason: "selects no column of \(id); name at least one of \(known), or leave out `properties` to read every column")
        }
        return names.map { byName[$0]! }
    }
}
