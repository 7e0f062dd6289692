select
    product_id,
    sku,
    name as product_name,
    category,
    unit_price,
    active as is_active,
    cast(updated_at as {{ dbt.type_timestamp() }}) as updated_at
from {{ source('shop_api', 'products') }}
