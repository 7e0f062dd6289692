select
    payment_id,
    order_id,
    method as payment_method,
    amount,
    status as payment_status,
    cast(paid_at as {{ dbt.type_timestamp() }}) as paid_at,
    cast(updated_at as {{ dbt.type_timestamp() }}) as updated_at
from {{ source('shop_db', 'payments') }}
