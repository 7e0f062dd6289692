select
    event_id,
    session_id,
    customer_id,
    event_type,
    cast(event_ts as {{ dbt.type_timestamp() }}) as event_ts,
    cast(event_ts as date) as event_date,
    url
from {{ source('shop', 'web_events') }}
