"""The index side of re-ranking: the dense views cached beside an index (`cache`, in part files
`parts`) and the two-stage search that verifies a query's top hits against them (`search`).

The dense network, the verification and the re-ranking score are `retrieval.rerank`'s.
"""
