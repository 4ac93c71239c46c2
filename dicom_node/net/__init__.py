"""The network layer every stage shares: the Application Entity, access policy, TLS, and
(in ``patches``) pynetdicom made faster."""
