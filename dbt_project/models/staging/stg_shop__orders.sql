select
    order_id,
    customer_id,
    cast(order_ts as {{ dbt.type_timestamp() }}) as order_ts,
    cast(order_ts as date) as order_date,
    status,
    currency,
    amount,
    status <> 'cancelled' as is_revenue,
    cast(updated_at as {{ dbt.type_timestamp() }}) as updated_at
from {{ source('shop', 'orders') }}
